from detector.models.detector import HeadOutput, YOLODetector

__all__ = ["HeadOutput", "YOLODetector"]
