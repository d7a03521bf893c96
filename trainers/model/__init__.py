"""What a model is and how it is built.

- :mod:`trainers.model.architecture`: Architecture and StageChoice: a model as frozen, hashable data.
- :mod:`trainers.model.layout`: YOLO26's stage table (layer indices, stock depths), no torch.
- :mod:`trainers.model.yolo26`: the stage builders: a stage choice becomes the module at its layer.
- :mod:`trainers.model.build`: build_model(arch, nc): a real Ultralytics DetectionModel.
- :mod:`trainers.model.detection_model`: RepDetectionModel: fuse() also folds our blocks.
- :mod:`trainers.model.heads`: the two YOLO26 heads, pinned for validation, latency and export.
- :mod:`trainers.model.se_budget`: the DynamicSE width cost.
- :mod:`trainers.model.supernet_spec`: what a weight-sharing supernet holds (plain data, no torch).
- :mod:`trainers.model.supernet`: the supernet: one ChoiceModule per searchable stage and downsample.
- :mod:`trainers.model.elastic`: elastic width and depth: a narrower path runs on leading slices of the supernet.
- :mod:`trainers.model.extract`: extract(supernet, arch): build_model(arch) with the path's weights.
"""

__all__ = [
    "architecture",
    "layout",
    "yolo26",
    "build",
    "detection_model",
    "heads",
    "se_budget",
    "supernet_spec",
    "supernet",
    "elastic",
    "extract",
]
