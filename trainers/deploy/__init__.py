"""Deployed forms of a trained model.

- :mod:`trainers.deploy.exported`: save and load fused exports.
- :mod:`trainers.deploy.onnx_io`: ONNX export and ONNX Runtime checks.
- :mod:`trainers.deploy.ultralytics_export`: Ultralytics' exporter with our fuse.
- :mod:`trainers.deploy.inference`: fused copies, params, GFLOPs.
"""

__all__ = ["exported", "onnx_io", "ultralytics_export", "inference"]
