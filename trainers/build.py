"""``build_model(arch, nc)``: a real Ultralytics ``DetectionModel`` for an :class:`Architecture`.

The stock YOLO26 model is built first, then each stage's module is swapped for ours (same
input/output channels, same layer attributes), then Ultralytics' ``initialize_weights`` is
called again so swapped-in BatchNorms get its eps/momentum. The architecture is recorded in
``model.yaml["architecture"]``, so a checkpoint that Ultralytics saves rebuilds it through
our trainer's ``get_model`` (:func:`model_from_yaml`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainers.architecture import Architecture


def build_model(arch: Architecture, nc: int = 80, verbose: bool = False) -> Any:
    """Build the detector for ``arch`` with ``nc`` classes (training form, unfused)."""
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load
    from ultralytics.utils.torch_utils import initialize_weights

    from trainers.yolo26 import swap_stages

    stem = arch.base.rsplit(".", 1)[0]
    cfg = yaml_model_load(f"{stem}{arch.scale}.yaml")
    cfg["architecture"] = arch.to_dict()
    cfg["architecture_hash"] = arch.hash
    model: Any = DetectionModel(cfg, nc=nc, verbose=verbose)
    swap_stages(model, arch.stages)
    initialize_weights(model)
    return model


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture recorded in a model built by :func:`build_model` (stock models: the baseline)."""
    data = getattr(model, "yaml", {}) or {}
    if "architecture" in data:
        return Architecture.from_dict(data["architecture"])
    return Architecture.baseline()


def model_from_yaml(cfg: Any, nc: int, verbose: bool = False) -> Any:
    """Rebuild a model from an Ultralytics ``model.yaml`` dict that records an architecture."""
    if isinstance(cfg, dict) and "architecture" in cfg:
        return build_model(Architecture.from_dict(cfg["architecture"]), nc=nc, verbose=verbose)
    raise ValueError("model yaml records no architecture: it was not built by trainers.build.build_model")

