from detector.models.detectors.yolo import YOLODetector
from detector.models.heads.dfl import DFLHeadOutput

__all__ = ["DFLHeadOutput", "YOLODetector"]
