"""``extract(supernet, arch)``: the plain model of one path, with the supernet's weights for it.

The bridge back to the rest of the project (mmrazor's ``export_fix_subnet`` + load): the subnet is
``build_model(arch)`` itself (same class, same modules, same ``model.yaml["architecture"]``), so it
trains, fuses, exports and is measured like any trial's model. Its weights are the supernet's
shared layers plus, at every choice module, the weights of the candidate ``arch`` selects
(:func:`trainers.model.supernet.path_state_dict`), loaded with ``strict=True``: a candidate whose
modules differ from what ``build_model`` makes fails loudly.
A path narrower or shallower than the supernet takes the leading slices of those weights
(:mod:`trainers.model.elastic`).
"""

from __future__ import annotations

from typing import Any

from trainers.model.architecture import Architecture
from trainers.model.supernet import SupernetModel, path_state_dict

__all__ = ["extract"]


def extract(supernet: SupernetModel, arch: Architecture) -> Any:
    """A stand-alone ``build_model(arch)`` detector holding the supernet's weights for ``arch``'s path.

    Same ``nc``, class names, head settings (:data:`trainers.model.elastic.HEAD_ATTRS`) and train/eval mode as the
    supernet; the supernet and its current path are left unchanged, and the subnet shares no tensor with it.
    """
    from trainers.model.build import build_model
    from trainers.model.elastic import copy_head_attrs

    cfg: Any = supernet.yaml
    model = build_model(arch, nc=cfg["nc"])
    model.load_state_dict(path_state_dict(supernet, arch, like=model.state_dict()), strict=True)
    model.names = dict(supernet.names)
    copy_head_attrs(supernet.layers[-1], model.model[-1])
    return model.train(supernet.training)
