"""Exported model files: ONNX I/O, the Ultralytics exporter path, inference, loading an export."""
