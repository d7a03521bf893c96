"""``extract(supernet, arch)``: the plain model of one path, with the supernet's weights for it.

The bridge back to the rest of the project (mmrazor's ``export_fix_subnet`` + load): the subnet is
``build_model(arch)`` itself (same class, same modules, same ``model.yaml["architecture"]``), so it
trains, fuses, exports and is measured like any trial's model. Its weights are the supernet's
shared layers plus, at every choice module, the weights of the candidate ``arch`` selects, loaded
with ``strict=True``: a candidate whose modules differ from what ``build_model`` makes fails loudly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from trainers.model.architecture import Architecture
from trainers.model.supernet import SupernetModel, choice_modules, path_keys
from trainers.model.supernet_spec import head_key

__all__ = ["extract", "path_state_dict", "selected_candidates"]


def path_state_dict(supernet: SupernetModel, arch: Architecture) -> dict[str, Tensor]:
    """The supernet's state dict for ``arch``'s path, keyed as in ``build_model(arch)`` (tensors shared, not copied).

    ``ValueError`` naming the stage if ``arch`` is not a path of the supernet.
    """
    supernet.spec.check(arch)
    keys = path_keys(arch)
    choices = choice_modules(supernet)
    head = head_key(arch.head_stem, arch.head_stem_layers)
    out: dict[str, Tensor] = {}
    for i, layer in enumerate(supernet.layers):
        module = choices[i].candidates[keys[i]] if i in choices else layer
        out.update({f"model.{i}.{k}": v for k, v in selected_candidates(module.state_dict(), head).items()})
    return out


def selected_candidates(state: dict[str, Tensor], key: str) -> dict[str, Tensor]:
    """A state dict with every ``ChoiceModule`` inside it reduced to its candidate ``key``.

    ``cv2.0.candidates.repconv2.0.m.0.conv_kxk.conv.weight`` becomes ``cv2.0.0.m.0.conv_kxk.conv.weight``;
    the tensors of the other candidates are dropped, keys without a choice module are kept as they are.
    """
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        before, sep, after = name.partition(".candidates.")
        if not sep:
            out[name] = tensor
            continue
        candidate, _, rest = after.partition(".")
        if candidate == key:
            out[f"{before}.{rest}"] = tensor
    return out


def extract(supernet: SupernetModel, arch: Architecture) -> Any:
    """A stand-alone ``build_model(arch)`` detector holding the supernet's weights for ``arch``'s path.

    Same ``nc``, class names, head selection (``end2end``, ``max_det``) and train/eval mode as the
    supernet; the supernet and its current path are left unchanged, and the subnet shares no tensor with it.
    """
    from trainers.model.build import build_model

    state = path_state_dict(supernet, arch)
    cfg: Any = supernet.yaml
    model = build_model(arch, nc=cfg["nc"])
    model.load_state_dict(state, strict=True)
    model.names = dict(supernet.names)
    head, mine = supernet.layers[-1], model.model[-1]
    for attr in ("end2end", "max_det"):
        if hasattr(head, attr):
            setattr(mine, attr, getattr(head, attr))
    return model.train(supernet.training)
