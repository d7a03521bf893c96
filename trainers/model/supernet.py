"""The one-shot supernet: a YOLO26 ``DetectionModel`` whose stages are :class:`ChoiceModule` s.

Built the way :func:`trainers.model.build.build_model` builds one architecture, from the same pieces:
the YOLO26 model dict is sized at the supernet's widths and depths
(:func:`trainers.model.yolo26.resized_model_dict`), the model is built from it, then every stage's
C3k2 and every stride-2 conv before a stage becomes a :class:`ChoiceModule` whose candidates are
made by the same stage builders (:func:`trainers.model.yolo26.build_stage`,
:func:`trainers.model.yolo26.build_downsample`), each from its own copy of the stock module; then the
candidates of one block family share the layers they have in common
(:func:`trainers.model.weight_sharing.share_within_families`: the C3k2_RVB_SE trunk is one set of
weights for all its SE and kernel options, each SE shape and each kernel branch its own). Families and
downsample candidates keep their own weights. Stem, SPPF, C2PSA, the concats and the head are shared
by every path, except, when the spec lists head stems other than the stock one, every per-scale branch
of the Detect head (box and class, one-to-many and one-to-one): each becomes a :class:`ChoiceModule` of
its head stem candidates (:func:`trainers.model.yolo26.build_head_branch`, each its own weights), all
switched together by the path.

As in mmrazor's ``OneShotMutableOP``, a choice module knows its candidates and which one runs
(``current``), not how it is picked: :func:`set_path` selects an :class:`Architecture`'s path
(the mutator's job; sampling lives in :mod:`search.space.supernet`), and :func:`trainers.model.extract.extract`
turns a path into the plain model ``build_model`` returns, with the supernet's weights.

The supernet is built at each stage's largest width and depth. A path at that shape runs through the
choice modules; a narrower or shallower one runs as its own ``build_model`` structure on leading slices
of the supernet's tensors (:mod:`trainers.model.elastic`), so its gradients and BatchNorm statistics
land in the supernet.

For Ultralytics training: module-level classes (picklable), the spec recorded in
``model.yaml["supernet"]`` (:func:`supernet_from_yaml` rebuilds it), and a ``fuse()`` that does
nothing, since Ultralytics' final validation and ``AutoBackend`` call ``fuse()`` in place and folding
shared BatchNorm statistics would destroy the supernet. Only extracted subnets are fused.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from trainers.model.architecture import Architecture
from trainers.model.detection_model import RepDetectionModel
from trainers.model.layout import STAGE_LAYERS
from trainers.model.supernet_spec import STOCK_HEAD, SupernetSpec, choice_key, head_key
from trainers.model.weight_sharing import share_within_families
from trainers.model.yolo26 import HEAD_BRANCHES, adopt_layer_attrs, build_downsample, build_head_branch, build_stage

__all__ = ["ChoiceModule", "PathParams", "SupernetModel", "build_supernet", "choice_modules", "head_choice_modules",
           "path_state_dict", "selected_candidates", "set_path", "supernet_from_yaml", "supernet_yaml"]


class ChoiceModule(nn.Module):
    """A layer that holds candidate modules under their keys; ``current`` is the one that runs.

    Args:
        candidates: key -> module, each with its own weights and the same input/output shape.
        current: the key that runs first (default: the first candidate).
    """

    def __init__(self, candidates: dict[str, nn.Module], current: str | None = None):
        super().__init__()
        if not candidates:
            raise ValueError("a ChoiceModule needs at least one candidate, got none")
        self.candidates = nn.ModuleDict(candidates)
        self.current = next(iter(candidates)) if current is None else current
        self.select(self.current)

    @property
    def choices(self) -> tuple[str, ...]:
        """The candidate keys, in order."""
        return tuple(self.candidates.keys())

    def select(self, key: str) -> None:
        """Make candidate ``key`` the one that runs; ``ValueError`` naming the keys if it is none of them."""
        if key not in self.candidates:
            raise ValueError(f"choice must be one of {list(self.choices)}, got {key!r}")
        self.current = key

    def active(self) -> nn.Module:
        """The candidate that runs."""
        return self.candidates[self.current]

    def forward(self, x: Tensor) -> Tensor:
        """The current candidate's output."""
        return self.active()(x)

    def __getitem__(self, index: int) -> nn.Module:
        """The current candidate's layer ``index``, for a choice that stands where a ``Sequential`` stood.

        Ultralytics indexes the Detect head's branches (``head.cv2[i][0].conv`` in ``DetectionModel.load``,
        which resuming a run calls; ``branch[-1]`` for the prediction conv), and a head stem choice module
        stands in such a branch.
        """
        candidate: Any = self.active()
        return candidate[index]

    def extra_repr(self) -> str:
        return f"current={self.current!r}, {len(self.candidates)} candidates"


class SupernetModel(RepDetectionModel):
    """A YOLO26 detector whose stages hold every candidate of a :class:`SupernetSpec` (``cfg["supernet"]``).

    ``cfg`` is the model dict sized at the spec's widths and depths, as :func:`build_supernet` writes
    it and Ultralytics saves it in a checkpoint's ``model.yaml``.
    """

    def __init__(self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None, verbose: bool = False):
        from ultralytics.utils.torch_utils import initialize_weights

        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        self._spec = SupernetSpec.from_dict(cfg["supernet"])
        spec, layers = self._spec, self.layers
        for name, stage in spec.stages:
            idx, ds = STAGE_LAYERS[name]
            stock = layers[idx]
            blocks = {choice_key(c): build_stage(copy.deepcopy(stock), replace(c, width=stage.width, depth=stage.depth))
                      for c in stage.blocks}
            share_within_families(blocks, [c.block for c in stage.blocks])
            layers[idx] = adopt_layer_attrs(ChoiceModule(blocks), stock)
            if ds is not None:
                conv = layers[ds]
                convs = {d: build_downsample(copy.deepcopy(conv), d) for d in stage.downsamples}
                layers[ds] = adopt_layer_attrs(ChoiceModule(convs), conv)
        if spec.head_stems != STOCK_HEAD:
            self._head_choices(layers[-1])
        initialize_weights(self)

    def _head_choices(self, detect: Any) -> None:
        """Make every per-scale branch of the Detect head a :class:`ChoiceModule` of the spec's head stems."""
        for name in HEAD_BRANCHES:
            branches: Any = getattr(detect, name, None) or []
            for i, branch in enumerate(branches):
                branches[i] = ChoiceModule({head_key(stem, n): build_head_branch(copy.deepcopy(branch), stem, n)
                                            for stem, n in self._spec.head_stems})
        adopt_layer_attrs(detect, detect)

    @property
    def layers(self) -> nn.Sequential:
        """Ultralytics' layer list (``self.model``), typed."""
        layers: Any = self.model
        return layers

    @property
    def spec(self) -> SupernetSpec:
        """The candidates this supernet holds (as recorded in ``model.yaml["supernet"]``)."""
        return self._spec

    @property
    def elastic_path(self) -> Architecture | None:
        """The selected path when it is narrower or shallower than the built shape (``None``: it runs in place)."""
        path: Architecture | None = self.__dict__.get("_elastic_path")
        return path

    def prepare(self, arch: Architecture) -> None:
        """Build (and cache) what path ``arch`` runs on, so that selecting it later costs nothing: the skeleton of
        a narrower or shallower path (:func:`trainers.model.elastic.skeleton`); nothing at the built shape."""
        if self.spec.built(arch) != arch:
            from trainers.model.elastic import skeleton

            cfg: Any = self.yaml
            skeleton(arch, cfg["nc"], *self.placement())

    def placement(self) -> tuple[Any, Any]:
        """``(device, dtype)`` of the supernet's tensors: where the skeletons of its elastic paths are kept."""
        first = next(self.parameters())
        return first.device, first.dtype

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Ultralytics' forward over the layers; an elastic path runs on its skeleton (:mod:`trainers.model.elastic`),
        which gets the same arguments."""
        path = self.elastic_path
        if path is None:
            return super().predict(x, *args, **kwargs)
        from trainers.model.elastic import run_on

        cfg: Any = self.yaml
        state = path_state_dict(self, path, keep_vars=True)
        return run_on(path, cfg["nc"], state, x, self.layers[-1], self.training, *args, **kwargs)

    def fuse(self, verbose: bool = True, imgsz: Any = 640) -> SupernetModel:
        """Do nothing and return the supernet: folding BatchNorm shared by paths would destroy it.

        Ultralytics calls ``fuse()`` in place (final validation, ``AutoBackend``); it gets the
        unfused supernet. Fuse an extracted subnet (:func:`trainers.model.extract.extract`) instead.
        """
        return self

    def fuse_ultralytics_only(self, verbose: bool = False, imgsz: Any = 640) -> SupernetModel:
        """Do nothing, as :meth:`fuse`."""
        return self


def supernet_yaml(spec: SupernetSpec) -> dict[str, Any]:
    """The ``model.yaml`` dict of the supernet of ``spec``: the resized YOLO26 dict with ``spec`` under ``supernet``."""
    from ultralytics.nn.tasks import yaml_model_load

    from trainers.model.yolo26 import resized_model_dict

    stem = spec.base.rsplit(".", 1)[0]
    cfg = resized_model_dict(yaml_model_load(f"{stem}{spec.scale}.yaml"), spec.shape().stages)
    return {**cfg, "supernet": spec.to_dict()}


def build_supernet(spec: SupernetSpec, nc: int = 80, verbose: bool = False) -> SupernetModel:
    """Build the supernet of ``spec`` with ``nc`` classes (training form); its path starts at the first candidates."""
    return SupernetModel(supernet_yaml(spec), nc=nc, verbose=verbose)


def supernet_from_yaml(cfg: dict[str, Any], nc: int, verbose: bool = False) -> SupernetModel:
    """Rebuild a supernet from the ``model.yaml`` dict of a saved one (weights are loaded separately)."""
    if not isinstance(cfg, dict) or "supernet" not in cfg:
        raise ValueError("model yaml records no supernet: it was not built by trainers.model.supernet.build_supernet")
    return SupernetModel(copy.deepcopy(cfg), nc=nc, verbose=verbose)


def choice_modules(supernet: SupernetModel) -> dict[int, ChoiceModule]:
    """Layer index -> the choice module there (every stage and every stride-2 conv before a stage)."""
    return {i: m for i, m in enumerate(supernet.layers) if isinstance(m, ChoiceModule)}


def head_choice_modules(supernet: SupernetModel) -> list[ChoiceModule]:
    """The head stem choice modules inside the Detect head (none when the supernet holds the stock head only)."""
    return [m for m in supernet.layers[-1].modules() if isinstance(m, ChoiceModule)]


def path_keys(arch: Architecture) -> dict[int, str]:
    """Layer index -> the candidate key ``arch`` selects there."""
    keys: dict[int, str] = {}
    for name, choice in arch.stages:
        idx, ds = STAGE_LAYERS[name]
        keys[idx] = choice_key(choice)
        if ds is not None:
            keys[ds] = choice.downsample or "Conv"
    return keys


def path_state_dict(supernet: SupernetModel, arch: Architecture, keep_vars: bool = False,
                    like: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The supernet's state dict for ``arch``'s path, keyed as in ``build_model(arch)`` (tensors shared, not copied:
    leading slices of the built ones where ``arch`` is narrower or shallower). ``keep_vars``: parameters as they
    are (gradients flow), not detached. ``like``: ``build_model(arch)``'s state dict where the caller has it (the
    slices' shapes; else the path's cached skeleton gives them).

    ``ValueError`` naming the stage if ``arch`` is not a path of the supernet.
    """
    from trainers.model.elastic import skeleton, sliced_state

    supernet.spec.check(arch)
    built = supernet.spec.built(arch)
    keys = path_keys(arch)
    choices = choice_modules(supernet)
    head = head_key(arch.head_stem, arch.head_stem_layers)
    out: dict[str, Tensor] = {}
    for i, layer in enumerate(supernet.layers):
        module = choices[i].candidates[keys[i]] if i in choices else layer
        state = module.state_dict(keep_vars=keep_vars)
        out.update({f"model.{i}.{k}": v for k, v in selected_candidates(state, head).items()})
    if built == arch:
        return out
    if like is None:  # the skeleton at the supernet's placement: the one prepare() built ahead and run_on runs
        cfg: Any = supernet.yaml
        like = skeleton(arch, cfg["nc"], *supernet.placement()).state_dict()
    return sliced_state(out, like)


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


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class PathParams:
    """The parameter count of a path, as ``build_model(arch)`` counts it.

    At the built shape from per-candidate counts (nothing built): the supernet's layers that hold no choice
    count once; each choice module adds its selected candidate's parameters (a candidate's shared layers
    counted as in the path's own model). A narrower or shallower path counts its skeleton's
    (:func:`trainers.model.elastic.skeleton`, cached for the training step that runs it).
    """

    def __init__(self, supernet: SupernetModel):
        cfg: Any = supernet.yaml
        self._spec, self._nc, self._placement = supernet.spec, int(cfg["nc"]), supernet.placement()
        choices, heads = choice_modules(supernet), head_choice_modules(supernet)
        in_heads = {id(p) for m in heads for p in m.parameters()}
        self._fixed = sum(p.numel() for i, layer in enumerate(supernet.layers) if i not in choices
                          for p in layer.parameters() if id(p) not in in_heads)
        self._layers = {i: {k: _numel(c) for k, c in m.candidates.items()} for i, m in choices.items()}
        self._heads = [{k: _numel(c) for k, c in m.candidates.items()} for m in heads]

    def __call__(self, arch: Architecture) -> int:
        """Parameters of ``arch``'s path (an architecture of this supernet's spec)."""
        if self._spec.built(arch) != arch:
            from trainers.model.elastic import skeleton

            return _numel(skeleton(arch, self._nc, *self._placement))
        keys, head = path_keys(arch), head_key(arch.head_stem, arch.head_stem_layers)
        return (self._fixed + sum(counts[keys[i]] for i, counts in self._layers.items())
                + sum(counts[head] for counts in self._heads))


def set_path(supernet: SupernetModel, arch: Architecture) -> None:
    """Select ``arch``'s candidate in every choice module; ``ValueError`` naming the stage if it is not a path."""
    supernet.spec.check(arch)
    modules = choice_modules(supernet)
    for idx, key in path_keys(arch).items():
        modules[idx].select(key)
    for module in head_choice_modules(supernet):
        module.select(head_key(arch.head_stem, arch.head_stem_layers))
    supernet.__dict__["_elastic_path"] = None if supernet.spec.built(arch) == arch else arch
