"""``build_model(arch, nc)``: a real Ultralytics ``DetectionModel`` for an :class:`Architecture`.

The model is a :class:`trainers.model.detection_model.RepDetectionModel` (a ``DetectionModel`` whose
``fuse()`` also folds our blocks), so Ultralytics' exporter, validator and predictor fuse it.

The YOLO26 model dict is given each stage's width and depth first
(:func:`trainers.model.yolo26.resized_model_dict`: Ultralytics' own parser then sizes every later
layer and the head to match), the model is built from it, then each stage's module is swapped
for ours (the input/output channels and depth of the module it replaces, same layer
attributes), the Detect head's stems are swapped when the architecture's ``head_stem`` is not
stock (:func:`trainers.model.yolo26.swap_head`), then Ultralytics' ``initialize_weights`` is called
again so swapped-in BatchNorms get its eps/momentum. With stock widths, depths and head the dict and
the model are exactly stock.

With a RepViT backbone, layers 0-8 of the dict are placeholders of the RepViT modules' widths
(:func:`trainers.model.yolo26.backbone_model_dict`), so the neck is parsed on RepViT's P3/P4/P5, and the
RepViT stem and stages are put in their place (:func:`trainers.model.yolo26.swap_backbone`) before
``initialize_weights``.
The architecture is recorded in ``model.yaml["architecture"]``, so a checkpoint that
Ultralytics saves rebuilds it through our trainer's ``get_model`` (:func:`model_from_yaml`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainers.model.architecture import Architecture


def build_model(arch: Architecture, nc: int = 80, verbose: bool = False) -> Any:
    """Build the detector for ``arch`` with ``nc`` classes (training form, unfused)."""
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils.torch_utils import initialize_weights

    from trainers.model.architecture import stages_of_backbone
    from trainers.model.detection_model import RepDetectionModel
    from trainers.model.yolo26 import architecture_model_dict, repvit_net, swap_backbone, swap_head, swap_stages

    base = yaml_model_load(f"{arch.base.rsplit('.', 1)[0]}{arch.scale}.yaml")
    net = repvit_net(arch.backbone, base)
    cfg = architecture_model_dict(base, arch.stages, net)
    cfg["nc"] = nc  # the dict says the class count, so Ultralytics logs no "Overriding model.yaml nc=80" line
    cfg["architecture"] = arch.to_dict()
    cfg["architecture_hash"] = arch.hash
    model: Any = RepDetectionModel(cfg, nc=nc, verbose=verbose)
    built = stages_of_backbone(arch.backbone)
    swap_stages(model, tuple((n, c) for n, c in arch.stages if n in built))
    if net is not None:
        swap_backbone(model, net)
    swap_head(model, arch.head_stem, arch.head_stem_layers)
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
    raise ValueError("model yaml records no architecture: it was not built by trainers.model.build.build_model")

