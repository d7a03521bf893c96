"""YOLO26 as Ultralytics lays it out, and how a stage choice becomes the module at that layer.

The module that knows how YOLO26's model dict (its stage table: :mod:`trainers.model.layout`)
scales (:func:`resized_model_dict` gives a stage other channels and depth) and the attributes of
Ultralytics modules that our builders read (``cv1``, ``cv2``, ``m``, ``c``) or must copy for
Ultralytics' ``forward`` (``i``, ``f``, ``type``, ``np``). Each stage builder takes the stock
module at a stage (a ``C3k2``) and a :class:`~trainers.model.architecture.StageChoice`, and returns the
module that replaces it with the same input and output channels. Nothing in Ultralytics is
edited. An Ultralytics release that renames a layer can break only this file.

Importing this module does not import torch (the stage table is read by space validation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainers.model.layout import CHANNEL_MODULES, PASSTHROUGH_MODULES, STAGE_LAYERS, repeats_for_depth

if TYPE_CHECKING:
    from torch import nn

    from trainers.model.architecture import StageChoice

def resized_model_dict(cfg: dict[str, Any], stages: tuple[tuple[str, StageChoice], ...]) -> dict[str, Any]:
    """A copy of a YOLO26 model dict whose stage layers have each choice's width and depth.

    A stage's channels become ``make_divisible(stock channels * width, 8)`` and its blocks
    ``depth``; Ultralytics' ``parse_model`` then derives every later layer's input channels
    (the stride-2 conv after the stage, the concats, the head) from them. To write any channel
    count exactly, every layer's channels are first clamped to the scale's ``max_channels`` (what
    ``parse_model`` would do) and ``max_channels`` is raised to the widest stage. ``cfg`` itself
    is returned when no stage changes width or depth (the stock dict, untouched).
    """
    from ultralytics.utils.ops import make_divisible

    if all(c.width == 1.0 and c.depth is None for _, c in stages):
        return cfg
    out, layers = _clamped_copy(cfg)
    depth_multiple, width_multiple, _ = out["scales"][out["scale"]]
    for name, choice in stages:
        layer = layers[STAGE_LAYERS[name][0]]
        stock = make_divisible(layer[3][0] * width_multiple, 8)
        _write_channels(layer, make_divisible(stock * choice.width, 8), width_multiple, f"stage {name}")
        if choice.depth is not None:
            layer[1] = repeats_for_depth(choice.depth, depth_multiple)
    return _widest_max_channels(out, layers)


def _clamped_copy(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """A deep copy of a YOLO26 model dict with every layer's channels clamped to ``max_channels``, and its layers.

    ``ValueError`` for a layer this builder does not know.
    """
    out = copy.deepcopy(cfg)
    layers = out["backbone"] + out["head"]
    max_channels = out["scales"][out["scale"]][2]
    for i, (_, _, module, args) in enumerate(layers):
        if module in CHANNEL_MODULES:
            args[0] = min(args[0], max_channels)
        elif module not in PASSTHROUGH_MODULES:
            raise ValueError(f"layer {i} of {out.get('yaml_file')} is a {module!r}: not a YOLO26 layout this "
                             f"builder knows ({sorted(CHANNEL_MODULES | PASSTHROUGH_MODULES)})")
    return out, layers


def _write_channels(layer: list[Any], target: int, width_multiple: float, where: str) -> None:
    """Write the ``args[0]`` that ``parse_model`` scales to exactly ``target`` channels (a multiple of 8)."""
    from ultralytics.utils.ops import make_divisible

    layer[3][0] = int(target // width_multiple)  # any value in (target - 8, target] scales to target
    if make_divisible(layer[3][0] * width_multiple, 8) != target:
        raise ValueError(f"{where}: {target} channels cannot be written at width multiple {width_multiple}")


def _widest_max_channels(out: dict[str, Any], layers: list[Any]) -> dict[str, Any]:
    """``out`` with its scale's ``max_channels`` raised to the widest layer, so that no written width is clamped."""
    depth_multiple, width_multiple, max_channels = out["scales"][out["scale"]]
    widest = max(args[0] for _, _, module, args in layers if module in CHANNEL_MODULES)
    out["scales"] = {**out["scales"], out["scale"]: [depth_multiple, width_multiple, max(max_channels, widest)]}
    return out


def se_factory(choice: StageChoice) -> Any:
    """The :class:`blocks.se.SEFactory` of a stage choice, or ``None`` when SE is off."""
    from blocks.se import SEFactory

    if choice.se == "none":
        return None
    return SEFactory(choice.se_kind, choice.se_reduction, choice.se_min_ratio, choice.se_max_ratio)


def stock_channels(stock: Any) -> tuple[int, int, int]:
    """``(c1, c2, n)`` of an Ultralytics C2f-family module (``C3k2``)."""
    return stock.cv1.conv.in_channels, stock.cv2.conv.out_channels, len(stock.m)


def build_c3k2_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """The stock C3k2, unchanged (the baseline)."""
    return stock


def build_repvit_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """RepViT blocks in place of the C3k2, same depth; SE in every other block (as in the paper)."""
    from torch import nn

    from blocks.repvit import RepViTBlock

    c1, c2, n = stock_channels(stock)
    factory = se_factory(choice)
    return nn.Sequential(*(
        RepViTBlock(c1 if i == 0 else c2, c2, s=1, se=factory is not None and i % 2 == 0,
                    kernels=tuple(choice.kernels), se_module=factory)
        for i in range(n)
    ))


def build_c3k2_rvb_se_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """C3k2_RVB_SE with the stock stage's channels, depth and hidden ratio."""
    from blocks.repvit import C3k2_RVB_SE

    c1, c2, n = stock_channels(stock)
    e = (stock.c + 0.5) / c2  # int(c2 * e) == stock.c exactly, whatever float rounding does
    return C3k2_RVB_SE(c1, c2, n=n, se=choice.se, se_reduction=choice.se_reduction, kernels=tuple(choice.kernels),
                       e=e, se_module=se_factory(choice))


def _orepa_like(conv: Any) -> nn.Module:
    from blocks.orepa import OREPAConv

    c = conv.conv
    return OREPAConv(c.in_channels, c.out_channels, k=c.kernel_size[0], s=c.stride[0], g=c.groups)


def build_orepa_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """The stock C3k2 whose bottleneck convs (every ``Bottleneck.cv1/cv2`` inside) are OREPAConv."""
    for module in list(stock.m.modules()):
        if type(module).__name__ == "Bottleneck":
            module.cv1 = _orepa_like(module.cv1)
            module.cv2 = _orepa_like(module.cv2)
    return stock


def build_repblock_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """A RepBlock (a RepVGG stage: ``depth`` stacked 3x3 RepConv blocks) with the stock stage's channels.

    The stage's depth is its number of RepConv blocks; the stock C3k2's hidden split is not kept
    (every block runs at the stage's full output width, as in YOLOv6's EfficientRep). No SE.
    """
    from blocks.repblock import RepBlock

    c1, c2, n = stock_channels(stock)
    return RepBlock(c1, c2, n)


STAGE_BUILDERS: dict[str, Callable[[Any, StageChoice], nn.Module]] = {
    "C3k2": build_c3k2_stage,
    "RepViT": build_repvit_stage,
    "C3k2_RVB_SE": build_c3k2_rvb_se_stage,
    "OREPA": build_orepa_stage,
    "RepBlock": build_repblock_stage,
}
"""Block name (every name of :data:`blocks.registry.STAGE_BLOCKS`) -> its stage builder."""


def build_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """The module of ``choice``'s block in place of the stock C3k2 ``stock``."""
    return STAGE_BUILDERS[choice.block](stock, choice)


def build_downsample(stock: Any, name: str) -> nn.Module:
    """The stride-2 conv before a stage: the stock ``Conv``, a ``RepConv``, an ``OREPA`` or a ``QARepConv`` conv of its
    shape."""
    if name == "Conv":
        return stock
    from blocks.orepa import OREPAConv
    from blocks.qarepvgg import QARepConv
    from blocks.repvgg import RepConv

    c = stock.conv
    cls = {"RepConv": RepConv, "OREPA": OREPAConv, "QARepConv": QARepConv}[name]
    return cls(c.in_channels, c.out_channels, k=c.kernel_size[0], s=c.stride[0])


HEAD_BRANCHES: tuple[str, ...] = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
"""The Detect head's per-scale branch lists: box (``cv2``) and class (``cv3``), one-to-many and one-to-one."""


def build_head_branch(stock: Any, stem: str, layers: int) -> nn.Module:
    """One per-scale branch of the Detect head (an element of ``cv2``/``cv3``/``one2one_*``) for a head stem.

    ``stock``: the stock branch, an ``nn.Sequential`` of stem convs ending in the 1x1 prediction conv.
    ``"stock"`` returns it unchanged; ``"repconv"`` returns ``Sequential(HeadStem(c_in, c_mid, layers),
    prediction conv)``: a RepBlock of ``layers`` 3x3 RepConv blocks (:class:`trainers.model.head_stem.HeadStem`)
    from the branch's input width to the width the
    stock prediction conv reads (YOLO26's ``c2`` for boxes, ``c3`` for classes), then that same
    prediction conv (same module, so Ultralytics' bias initialisation is kept and ``branch[-1]`` is
    still the prediction conv). Box regression stays DFL-free (``reg_max`` 1) and the one-to-one
    branches get their own stems, so both YOLO26 heads and the NMS-free path are unchanged.
    """
    if stem == "stock":
        return stock
    from torch import nn

    from trainers.model.head_stem import HeadStem

    first = next(m for m in stock.modules() if isinstance(m, nn.Conv2d))
    pred = stock[-1]
    return nn.Sequential(HeadStem(first.in_channels, pred.in_channels, layers), pred)


def swap_head(model: Any, stem: str, layers: int) -> None:
    """Give every per-scale branch of an Ultralytics ``DetectionModel``'s Detect head the stem ``stem``."""
    detect = model.model[-1]
    for name in HEAD_BRANCHES:
        branches: Any = getattr(detect, name, None) or []
        for i, branch in enumerate(branches):
            branches[i] = build_head_branch(branch, stem, layers)
    adopt_layer_attrs(detect, detect)


def adopt_layer_attrs(new: Any, old: Any) -> Any:
    """Give ``new`` the layer attributes Ultralytics' forward and logging read from ``old``."""
    if new is not old:
        new.i, new.f = old.i, old.f
        new.type = type(new).__module__ + "." + type(new).__name__
    new.np = sum(p.numel() for p in new.parameters())
    return new


def swap_stages(model: Any, stages: tuple[tuple[str, StageChoice], ...]) -> None:
    """Replace, in an Ultralytics YOLO26 ``DetectionModel``, each stage's C3k2 and stride-2 conv as chosen."""
    for name, choice in stages:
        idx, ds = STAGE_LAYERS[name]
        old = model.model[idx]
        model.model[idx] = adopt_layer_attrs(build_stage(old, choice), old)
        if ds is not None and choice.downsample not in (None, "Conv"):
            old_ds = model.model[ds]
            model.model[ds] = adopt_layer_attrs(build_downsample(old_ds, choice.downsample), old_ds)


def repvit_width(cfg: dict[str, Any]) -> float:
    """The width a RepViT backbone is built at for ``cfg``'s scale: its width multiple over scale ``n``'s.

    The paper's widths are taken as they are at ``n`` (they are of the order of ``yolo26n``'s own backbone),
    and widened as YOLO26 widens its own at the other scales: ``s`` 2x, ``m`` and ``l`` 4x, ``x`` 6x.
    """
    scales = cfg["scales"]
    return float(scales[cfg["scale"]][1] / scales["n"][1])


def repvit_net(backbone: str, cfg: dict[str, Any]) -> Any:
    """The ``RepViTNet`` (:mod:`blocks.repvit_backbone`) of ``backbone`` at ``cfg``'s scale; ``None`` for yolo26."""
    from blocks.registry import repvit_config_name
    from blocks.repvit_backbone import RepViTNet
    from blocks.repvit_configs import REPVIT_CONFIGS

    name = repvit_config_name(backbone)
    return None if name is None else RepViTNet(REPVIT_CONFIGS[name], width=repvit_width(cfg))


def repvit_layers(net: Any) -> list[nn.Module]:
    """The modules of a ``RepViTNet`` that take the place of YOLO26's layers 0-8, in order.

    The stem's two convs (strides 2, 2), stage 1 (at stride 4, where YOLO26 has its P2 C3k2), then for
    stages 2-4 the stride-2 block (where YOLO26 has a stride-2 Conv) and the rest of the stage (where
    it has the C3k2): layers 4, 6 and 8 give P3, P4 and P5 (:data:`trainers.model.layout.BACKBONE_LAYER_STRIDES`).
    The modules are shared with ``net``, not copied.
    """
    stem, stages = net.stem, net.stages
    return [stem[0], stem[1], stages[0], *(part for stage in stages[1:] for part in (stage[0], stage[1:]))]


def repvit_layer_channels(net: Any) -> list[int]:
    """The output channels of each module of :func:`repvit_layers`."""
    c = net.channels
    return [c[0] // 2, c[0], c[0], c[1], c[1], c[2], c[2], c[3], c[3]]


def backbone_model_dict(cfg: dict[str, Any], net: Any) -> dict[str, Any]:
    """A copy of a YOLO26 model dict whose layers 0-8 are 1x1 ``Conv`` placeholders with the widths of ``net``.

    Each placeholder has the stride of the layer it stands for and the output channels of the RepViT
    module that :func:`swap_backbone` puts there, so ``parse_model`` builds the rest as stock on those
    widths: SPPF reads RepViT's P5, the two concats of the top-down path read its P4 and P3 (their
    C3k2 take the concatenated channels), and every layer keeps its own stock output width. No adapter
    conv is added. ``max_channels`` is raised to the widest written layer, as :func:`resized_model_dict` does.
    A width that is not a multiple of 8 (the stem's middle, half of stage 1's: 20 for ``repvit_m0_6``) is
    written rounded up, which ``parse_model`` can express: only the placeholder after it reads it.
    """
    from trainers.model.layout import BACKBONE_LAYER_STRIDES

    out, _ = _clamped_copy(cfg)
    width_multiple = out["scales"][out["scale"]][1]
    for i, (c, s) in enumerate(zip(repvit_layer_channels(net), BACKBONE_LAYER_STRIDES)):
        out["backbone"][i] = [-1, 1, "Conv", [c, 1, s]]
        _write_channels(out["backbone"][i], -(-c // 8) * 8, width_multiple, f"backbone layer {i}")
    return _widest_max_channels(out, out["backbone"] + out["head"])


def architecture_model_dict(cfg: dict[str, Any], stages: tuple[tuple[str, Any], ...], net: Any) -> dict[str, Any]:
    """The model dict ``parse_model`` builds an architecture from: ``cfg`` (the scale's YOLO26 dict) with the
    stages' widths and depths (:func:`resized_model_dict`) and, for a RepViT backbone ``net`` (``None``: YOLO26's
    own), its placeholders (:func:`backbone_model_dict`)."""
    cfg = resized_model_dict(cfg, stages)
    return cfg if net is None else backbone_model_dict(cfg, net)


def swap_backbone(model: Any, net: Any) -> None:
    """Put the modules of ``net`` (:func:`repvit_layers`) in place of :func:`backbone_model_dict`'s placeholders."""
    for i, (module, c) in enumerate(zip(repvit_layers(net), repvit_layer_channels(net))):
        old = model.model[i]
        if old.conv.out_channels != -(-c // 8) * 8:
            raise ValueError(f"layer {i} has {old.conv.out_channels} channels, the RepViT module {c}: the model "
                             "was not built from backbone_model_dict")
        model.model[i] = adopt_layer_attrs(module, old)
