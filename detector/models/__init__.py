from detector.models.heads.dfl import DFLHeadOutput
from detector.models.yolo import YOLODetector

__all__ = ["DFLHeadOutput", "YOLODetector"]
