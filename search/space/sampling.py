"""Turn a validated space into Optuna suggestions: ``SearchSpace.suggest(trial) -> Architecture``.

The space is conditional: SE options are suggested only when the chosen block takes SE and
SE is on, kernels only for RepViT-based blocks, the downsample only where the stage has a
stride-2 conv; width and depth apply to every block. The head stem is asked after the stages
(``head_stem``), its layer count (``head_stem_layers``) only for a non-stock stem. Parameter names
carry the condition where the choices differ (``p3_backbone.RepViT.se``), so every name keeps one fixed distribution, as
Optuna requires.
A list with a single choice is not suggested at all (it is not a dimension).

The backbone is asked first (``backbone``, when the space lists several). With a RepViT backbone the
backbone stages do not exist: their choices are not asked, and a stage tied to one of them stays stock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from blocks.registry import DEFAULT_BACKBONE, DEFAULT_HEAD_STEM_LAYERS, stage_block
from search.space.schema import SpaceFile, load_space
from search.space.stages import StageSpace
from trainers.model.architecture import Architecture, StageChoice, stages_of_backbone
from trainers.model.layout import STAGE_LAYERS, stock_depth


class TrialLike(Protocol):
    """The part of ``optuna.trial.Trial`` that sampling uses."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def _join(values: Sequence[int]) -> str:
    return "-".join(str(v) for v in values)


def _split(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("-"))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space that samples :class:`Architecture` objects through Optuna."""

    spec: SpaceFile

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Load and validate a space YAML file (raises ``SpaceError``)."""
        return cls(load_space(path))

    def _ties_to(self, name: str) -> list[str]:
        return [name] + [n for n, s in self.spec.stages if s.tie == name]

    def _has_downsample(self, name: str, backbone: str = DEFAULT_BACKBONE) -> bool:
        """Whether ``name``, or a stage tied to it that ``backbone`` builds, has a stride-2 conv."""
        built = stages_of_backbone(backbone)
        return any(STAGE_LAYERS[n][1] is not None for n in self._ties_to(name) if n in built)

    def suggest(self, trial: TrialLike) -> Architecture:
        """Ask ``trial`` for every applicable choice and return the sampled architecture."""
        backbones = self.spec.backbones
        backbone = backbones[0] if len(backbones) == 1 else trial.suggest_categorical("backbone", list(backbones))
        built = stages_of_backbone(backbone)
        choices: dict[str, StageChoice] = {}
        for name, st in self.spec.stages:
            if st.tie is None and name in built:
                choices[name] = self._suggest_stage(trial, name, st, backbone)
        for name, st in self.spec.stages:
            if st.tie is not None and name in built:
                choices[name] = choices.get(st.tie, StageChoice())  # tied to a stage a RepViT backbone replaces
        stem, layers = self._suggest_head_stem(trial)
        return Architecture.create(choices, base=self.spec.base, scale=self.spec.scale, backbone=backbone,
                                   head_stem=stem, head_stem_layers=layers)

    def _suggest_head_stem(self, trial: TrialLike) -> tuple[str, int]:
        """``(head_stem, head_stem_layers)``: asked where the space lists more than one (layers: non-stock only)."""
        stems, layers = self.spec.head_stems, self.spec.head_stem_layers
        stem = stems[0] if len(stems) == 1 else trial.suggest_categorical("head_stem", list(stems))
        if stem == "stock":
            return stem, DEFAULT_HEAD_STEM_LAYERS
        return stem, layers[0] if len(layers) == 1 else trial.suggest_categorical("head_stem_layers", list(layers))

    def _suggest_stage(self, trial: TrialLike, name: str, st: StageSpace, backbone: str) -> StageChoice:
        def pick(param: str, options: Sequence[Any]) -> Any:
            return options[0] if len(options) == 1 else trial.suggest_categorical(param, list(options))

        block = pick(f"{name}.block", st.blocks)
        spec = stage_block(block)
        placements = [p for p in st.se_placements if p in spec.se_placements] or ["none"]
        out = StageChoice(block=block, se=pick(f"{name}.{block}.se", placements))
        if out.se != "none":
            out = replace(out, se_kind=pick(f"{name}.se_kind", st.se_kinds))
            if out.se_kind == "fixed":
                out = replace(out, se_reduction=pick(f"{name}.se_reduction", st.reductions))
            else:
                lo, hi = _split(pick(f"{name}.se_ratios", [_join(b) for b in st.ratio_bounds]))
                out = replace(out, se_min_ratio=lo, se_max_ratio=hi)
        if spec.uses_kernels:
            out = replace(out, kernels=_split(pick(f"{name}.kernels", [_join(k) for k in st.kernels])))
        if self._has_downsample(name, backbone):
            out = replace(out, downsample=pick(f"{name}.downsample", st.downsamples))
        return replace(out, width=pick(f"{name}.width", st.widths), depth=pick(f"{name}.depth", st.depths))

    def baseline(self) -> Architecture:
        """The stock all-C3k2 model at this space's base and scale."""
        return Architecture.baseline(self.spec.base, self.spec.scale)

    def baseline_params(self) -> dict[str, Any]:
        """Optuna params that make :meth:`suggest` return the baseline, where the space allows it."""
        params: dict[str, Any] = {}
        if len(self.spec.backbones) > 1 and DEFAULT_BACKBONE in self.spec.backbones:
            params["backbone"] = DEFAULT_BACKBONE
        for name, st in self.spec.stages:
            if st.tie is None and len(st.blocks) > 1 and "C3k2" in st.blocks:
                params[f"{name}.block"] = "C3k2"
            if st.tie is None and self._has_downsample(name) and len(st.downsamples) > 1 and "Conv" in st.downsamples:
                params[f"{name}.downsample"] = "Conv"
            if st.tie is None and len(st.widths) > 1 and 1.0 in st.widths:
                params[f"{name}.width"] = 1.0
            if st.tie is None and len(st.depths) > 1 and stock_depth(self.spec.scale, name) in st.depths:
                params[f"{name}.depth"] = stock_depth(self.spec.scale, name)
        if len(self.spec.head_stems) > 1 and "stock" in self.spec.head_stems:
            params["head_stem"] = "stock"
        return params

    def stage_size(self, name: str, st: StageSpace, backbone: str = DEFAULT_BACKBONE) -> int:
        """Number of distinct canonical choices of one untied stage (with ``backbone``)."""
        ds = len(st.downsamples) if self._has_downsample(name, backbone) else 1
        total = 0
        shape = len(st.widths) * len(st.depths)
        for block in st.blocks:
            spec = stage_block(block)
            kernels = len(st.kernels) if spec.uses_kernels else 1
            se_on = [p for p in st.se_placements if p in spec.se_placements and p != "none"]
            per_se = sum(len(st.reductions) if k == "fixed" else len(st.ratio_bounds) for k in st.se_kinds)
            se_count = len(se_on) * per_se + (1 if "none" in st.se_placements or not se_on else 0)
            total += ds * kernels * se_count
        return total * shape

    def head_stem_size(self) -> int:
        """Number of distinct head stems: the stock one once, every other stem once per layer count."""
        stems = self.spec.head_stems
        return ("stock" in stems) + sum(len(self.spec.head_stem_layers) for s in stems if s != "stock")

    def size(self) -> int:
        """Number of distinct architectures in the space (summed over its backbones, times its head stems)."""
        total = 0
        for backbone in self.spec.backbones:
            n, built = 1, stages_of_backbone(backbone)
            for name, st in self.spec.stages:
                if st.tie is None and name in built:
                    n *= self.stage_size(name, st, backbone)
            total += n
        return total * self.head_stem_size()

    def dimensions(self) -> int:
        """Number of categorical parameters trials can suggest (conditional ones included, unreachable ones not)."""
        count = int(len(self.spec.backbones) > 1)
        built = {n for b in self.spec.backbones for n in stages_of_backbone(b)}
        for name, st in self.spec.stages:
            if st.tie is not None or name not in built:
                continue
            count += len(st.blocks) > 1
            se_reachable = False
            for block in st.blocks:
                placements = [p for p in st.se_placements if p in stage_block(block).se_placements] or ["none"]
                count += len(placements) > 1
                se_reachable |= any(p != "none" for p in placements)
            if se_reachable:
                count += len(st.se_kinds) > 1
                count += "fixed" in st.se_kinds and len(st.reductions) > 1
                count += "dynamic" in st.se_kinds and len(st.ratio_bounds) > 1
            count += any(stage_block(b).uses_kernels for b in st.blocks) and len(st.kernels) > 1
            count += any(self._has_downsample(name, b) for b in self.spec.backbones) and len(st.downsamples) > 1
            count += (len(st.widths) > 1) + (len(st.depths) > 1)
        stems = self.spec.head_stems
        count += len(stems) > 1
        count += any(s != "stock" for s in stems) and len(self.spec.head_stem_layers) > 1
        return count
