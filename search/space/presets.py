"""Preset points: one fixed architecture per design reference, evaluated as ordinary trials beside a search.

``spaces/presets/<name>.yaml`` holds one architecture in the ``Architecture`` JSON layout (stages
not named are stock) with a ``reference`` line saying which published design it stands for::

    reference: RepViT (Wang et al., CVPR 2024): RepViT blocks with SE in every stage
    architecture:
      stages:
        p3_backbone: {block: RepViT, se: {placement: in_blocks, kind: fixed, reduction: 4}}

``search.run --include-presets`` (or the space's ``presets: true`` / ``presets: [names]``) enqueues
each as a trial with user attr ``preset: <name>``; the trial trains, is measured and is re-measured
interleaved with the front like any other, so the Pareto report shows where each recipe lands.
A preset need not be inside the space (that is the point: compare a recipe with what the search found).

No torch import: a bad preset file fails in one line before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search.space.errors import SpaceError
from search.space.reader import Reader, UniqueKeyLoader
from trainers.model.architecture import Architecture

__all__ = ["PRESETS_DIR", "Preset", "load_preset", "preset_names", "presets_flag", "resolve_presets"]

PRESETS_DIR = Path(__file__).resolve().parents[2] / "spaces" / "presets"
PRESET_KEYS = ("reference", "architecture")


@dataclass(frozen=True)
class Preset:
    """A named fixed architecture and the design reference it stands for."""

    name: str
    reference: str
    architecture: Architecture


def preset_names(folder: Path = PRESETS_DIR) -> tuple[str, ...]:
    """The presets in ``folder``, sorted (file stems of ``*.yaml``)."""
    return tuple(sorted(p.stem for p in folder.glob("*.yaml")))


def load_preset(name: str, folder: Path = PRESETS_DIR) -> Preset:
    """The preset ``name``; :class:`SpaceError` (one line naming the file and field) when it is unknown or invalid."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise SpaceError("--include-presets", "", f"unknown preset {name!r}, allowed: {list(preset_names(folder))}")
    r = Reader(str(path))
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise r.fail("", f"not valid YAML ({str(e).splitlines()[0]})") from e
    d: dict[str, Any] = r.mapping(data, "", PRESET_KEYS)
    reference = d.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        raise r.fail("reference", "must name the design this preset stands for (a string)")
    arch_data = d.get("architecture")
    if not isinstance(arch_data, dict):
        raise r.fail("architecture", "must be a mapping (base, scale, stages) as Architecture.to_dict writes it")
    try:
        arch = Architecture.from_dict(arch_data)
    except (ValueError, TypeError, KeyError) as e:
        raise r.fail("architecture", str(e)) from e
    return Preset(name, reference.strip(), arch)


def resolve_presets(asked: bool | list[str] | tuple[str, ...], folder: Path = PRESETS_DIR) -> tuple[Preset, ...]:
    """``True``: every preset of ``folder``; a list: those named; ``False``/empty: none. Each loaded and checked."""
    if asked is True:
        names: tuple[str, ...] = preset_names(folder)
    elif not asked:
        names = ()
    else:
        names = tuple(asked)
    return tuple(load_preset(n, folder) for n in names)


def presets_flag(text: str, folder: Path = PRESETS_DIR) -> tuple[str, ...]:
    """The names ``--include-presets`` asks for: ``all`` or a comma-separated list, each checked (``SpaceError``)."""
    asked: bool | list[str] = True if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    return tuple(p.name for p in resolve_presets(asked, folder))
