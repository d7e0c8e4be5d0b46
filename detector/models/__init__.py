from detector.models.yolo import HeadOutput, YOLODetector

__all__ = ["HeadOutput", "YOLODetector"]
