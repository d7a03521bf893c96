"""The ``stages`` section of a space file: per stage, the allowed block choices, or a tie to another stage.

Part of :mod:`search.space.schema` (which reads the whole file); no torch import. Every rule violation
raises :class:`~search.space.errors.SpaceError` naming the field path (``stages.p4_out.se.reduction``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.registry import DEFAULT_BACKBONE, DEPTHWISE_KERNELS, DOWNSAMPLES, SE_KINDS, SE_PLACEMENTS, STAGE_BLOCKS
from search.space.reader import Reader, short
from trainers.model.architecture import DEPTH_MAX, DEPTH_MIN, WIDTH_RULE, is_width
from trainers.model.layout import BACKBONE_STAGES, STAGE_LAYERS

__all__ = ["StageSpace", "parse_stages"]

STAGE_KEYS = ("block", "se", "kernels", "downsample", "width", "depth", "tie")
SE_KEYS = ("placement", "kind", "reduction", "min_ratio", "max_ratio")
MAX_RATIO = 64


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage (tuples of allowed values), or a tie to another stage.

    ``widths``: multipliers of the stage's stock output channels; ``depths``: numbers of blocks,
    ``None`` standing for the scale's stock depth (the default when the file gives none).
    """

    blocks: tuple[str, ...] = ("C3k2",)
    se_placements: tuple[str, ...] = ("none",)
    se_kinds: tuple[str, ...] = ("fixed",)
    reductions: tuple[int, ...] = (4,)
    ratio_bounds: tuple[tuple[int, int], ...] = ((4, 16),)
    kernels: tuple[tuple[int, ...], ...] = ((3,),)
    downsamples: tuple[str, ...] = ("Conv",)
    widths: tuple[float, ...] = (1.0,)
    depths: tuple[int | None, ...] = (None,)
    tie: str | None = None


def parse_stages(r: Reader, value: Any, backbones: tuple[str, ...]) -> tuple[tuple[str, StageSpace], ...]:
    """The file's ``stages`` mapping, in ``STAGE_LAYERS`` order: each stage's choices or its tie to an untied stage;
    with no ``yolo26`` among ``backbones``, a backbone stage is an error."""
    stages = r.mapping(value, "stages", tuple(STAGE_LAYERS))
    if not stages:
        raise r.fail("stages", f"must name at least one stage of {list(STAGE_LAYERS)}, got {{}}")
    parsed = {name: _parse_stage(r, f"stages.{name}", spec) for name, spec in stages.items()}
    for name, st in parsed.items():
        if st.tie is None:
            continue
        if st.tie not in parsed or parsed[st.tie].tie is not None or st.tie == name:
            untied = [n for n, s in parsed.items() if s.tie is None and n != name]
            raise r.fail(f"stages.{name}.tie", f"must name an untied stage of this file {untied}, got {st.tie!r}")
    ordered = tuple((n, parsed[n]) for n in STAGE_LAYERS if n in parsed)
    _check_backbone_stages(r, ordered, backbones)
    return ordered


def _parse_stage(r: Reader, field: str, value: Any) -> StageSpace:
    d = r.mapping(value, field, STAGE_KEYS)
    if "tie" in d:
        if len(d) > 1:
            raise r.fail(field, f"a tied stage takes no other keys, got {sorted(d)}")
        tie = d["tie"]
        if not isinstance(tie, str):
            raise r.fail(f"{field}.tie", f"must be a stage name, got {short(tie)}")
        return StageSpace(tie=tie)
    blocks = r.choices(d.get("block", "C3k2"), f"{field}.block", lambda v, f: r.choice(v, f, tuple(STAGE_BLOCKS)))
    se = _parse_se(r, f"{field}.se", d.get("se", {"placement": "none"}))
    kernels = r.choices(d.get("kernels", [[3]]), f"{field}.kernels", lambda v, f: _kernel_set(r, v, f))
    downsamples = r.choices(d.get("downsample", "Conv"), f"{field}.downsample",
                            lambda v, f: r.choice(v, f, DOWNSAMPLES))
    widths = r.choices(d.get("width", 1.0), f"{field}.width", lambda v, f: _width(r, v, f))
    depths = (r.choices(d["depth"], f"{field}.depth", lambda v, f: r.integer(v, f, DEPTH_MIN, DEPTH_MAX))
              if "depth" in d else (None,))
    return StageSpace(blocks=blocks, kernels=kernels, downsamples=downsamples, widths=widths, depths=depths, **se)


def _width(r: Reader, value: Any, field: str) -> float:
    if not is_width(value):
        raise r.fail(field, f"must be {WIDTH_RULE}, got {short(value)}")
    return float(value)


def _kernel_set(r: Reader, value: Any, field: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise r.fail(field, "a kernel set must list at least one kernel, got []")
    ks = tuple(r.choice(k, f"{field}[{i}]", DEPTHWISE_KERNELS) for i, k in enumerate(items))
    if len(set(ks)) != len(ks):
        raise r.fail(field, f"kernels in a set must be unique, got {short(value)}")
    return tuple(sorted(ks))


def _parse_se(r: Reader, field: str, value: Any) -> dict[str, Any]:
    d = r.mapping(value, field, SE_KEYS)
    placements = r.choices(d.get("placement", "none"), f"{field}.placement",
                           lambda v, f: r.choice(v, f, SE_PLACEMENTS))
    kinds = r.choices(d.get("kind", "fixed"), f"{field}.kind", lambda v, f: r.choice(v, f, SE_KINDS))
    reductions = r.choices(d.get("reduction", 4), f"{field}.reduction",
                           lambda v, f: r.integer(v, f, 1, MAX_RATIO))
    mins = r.choices(d.get("min_ratio", 4), f"{field}.min_ratio", lambda v, f: r.integer(v, f, 1, MAX_RATIO))
    maxs = r.choices(d.get("max_ratio", 16), f"{field}.max_ratio", lambda v, f: r.integer(v, f, 1, MAX_RATIO))
    bounds = tuple((a, b) for a in mins for b in maxs if a < b)
    if not bounds and "dynamic" in kinds:
        raise r.fail(f"{field}.min_ratio", f"must be < max_ratio for at least one pair, got min_ratio "
                     f"{list(mins)} and max_ratio {list(maxs)}")
    return {"se_placements": placements, "se_kinds": kinds, "reductions": reductions,
            "ratio_bounds": bounds or ((4, 16),)}


def _check_backbone_stages(r: Reader, stages: tuple[tuple[str, StageSpace], ...], backbones: tuple[str, ...]) -> None:
    """A backbone stage is a choice of the ``yolo26`` backbone only: without it in ``backbone``, none may be listed."""
    if DEFAULT_BACKBONE in backbones:
        return
    allowed = [n for n in STAGE_LAYERS if n not in BACKBONE_STAGES]
    for name, _ in stages:
        if name in BACKBONE_STAGES:
            raise r.fail(f"stages.{name}", f"a backbone stage applies only with backbone {DEFAULT_BACKBONE!r}; with "
                                           f"backbone {list(backbones)} the stages allowed are {allowed}, got {name!r}")
