"""Make ``repvit_reference.pt``: what the official RepViT code computes, for the tests to compare ours with.

    pip install timm          # the reference imports it (SqueezeExcite); only this script needs it
    python tests/blocks/data/make_repvit_reference.py PATH_TO_REPVIT [--out tests/blocks/data/repvit_reference.pt]

``PATH_TO_REPVIT`` is a checkout of github.com/THU-MIG/RepViT or its bare git directory (read at
``HEAD``); its ``model/repvit.py`` is loaded as it is, nothing of it is copied here. The fixture holds:

- ``source``: the reference file, its commit and the timm and torch versions;
- ``blocks``: per config (``m0_6`` ... ``m2_3``), each block of the reference network as
  ``(out channels, stride, SE)``, read from the built modules;
- ``params``: per config, the reference's parameter counts: ``features`` (training form, no
  classifier), ``classifier`` (one ``BN_Linear``, training form) and ``fused`` (after the
  reference's own ``utils.replace_batchnorm``, its distillation classifier merged into one linear layer,
  the form the paper counts);
- ``weights``/``input``/``outputs``: a truncated ``repvit_m0_6`` (``features[:6]``: the stem, stage 1
  and stage 2, which ends at stride 8) with every parameter and BatchNorm statistic randomized
  (fresh BatchNorm hides a wrong fuse or mapping), a fixed input, and the outputs of stage 1 and 2.
  Weights and input are drawn, rounded to float16 and stored so (about 230 KB instead of 460); the
  reference runs them in float32, so the outputs are exact float32 results of those values.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import torch

CONFIGS = ("m0_6", "m0_9", "m1_0", "m1_1", "m1_5", "m2_3")
TRUNCATE = 6  # features[:6] of repvit_m0_6: stem, 2 blocks at stride 4, 3 blocks at stride 8
STAGE_ENDS = (2, 5)  # the feature indices whose outputs end stage 1 and stage 2
INPUT_SHAPE = (2, 3, 42, 34)  # two images (the SE is per sample), odd sizes after striding


def read_reference(path: Path, name: str) -> tuple[str, str]:
    """The text of ``name`` in the RepViT repository at ``path`` (checkout or bare git dir) and its commit."""
    git = ["git", "-C", str(path)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    if (path / name).is_file():
        return (path / name).read_text(), commit
    text = subprocess.run([*git, "show", f"HEAD:{name}"], capture_output=True, text=True, check=True).stdout
    return text, commit


def load_module(name: str, text: str) -> types.ModuleType:
    """Execute ``text`` as module ``name``."""
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(text, name, "exec"), module.__dict__)
    return module


def block_table(net: torch.nn.Module, ref: types.ModuleType) -> list[tuple[int, int, bool]]:
    """``(out channels, stride, SE)`` of every block of a reference network (``features[1:]``)."""
    rows = []
    for block in list(net.features)[1:]:
        mixer = block.token_mixer
        stride = 1 if isinstance(mixer[0], ref.RepVGGDW) else int(mixer[0].c.stride[0])
        out = int(block.channel_mixer.m[2].c.out_channels)
        rows.append((out, stride, not isinstance(mixer[1], torch.nn.Identity)))
    return rows


def count(module: torch.nn.Module) -> int:
    """The number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def param_counts(ref: types.ModuleType, utils: types.ModuleType, name: str) -> dict[str, int]:
    """Training-form features and classifier, and the fused network with its merged distillation classifier."""
    plain = getattr(ref, f"repvit_{name}")(distillation=False)
    fused = getattr(ref, f"repvit_{name}")(distillation=True).eval()
    utils.replace_batchnorm(fused)
    return {"features": count(plain.features), "classifier": count(plain.classifier), "fused": count(fused)}


def randomize_(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights and BatchNorm statistics at scales that keep activations near 1, rounded to float16."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            elif isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())


def truncated_reference(ref: types.ModuleType) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Float16 weights (reference key names) and input of ``repvit_m0_6().features[:6]``, and its stage outputs."""
    gen = torch.Generator().manual_seed(0)
    net = ref.repvit_m0_6()
    piece = net.features[:TRUNCATE]
    randomize_(piece, gen)
    piece.eval()
    x = torch.randn(INPUT_SHAPE, generator=gen).half().float()
    outputs = []
    with torch.no_grad():
        y = x
        for i, layer in enumerate(piece):
            y = layer(y)
            if i in STAGE_ENDS:
                outputs.append(y.clone())
    weights = {f"features.{k}": v.half() if v.is_floating_point() else v for k, v in piece.state_dict().items()}
    return weights, x.half(), outputs


def main() -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("repvit", type=Path, help="THU-MIG/RepViT checkout or bare git directory")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("repvit_reference.pt"))
    args = p.parse_args()
    import timm

    text, commit = read_reference(args.repvit, "model/repvit.py")
    utils_text, _ = read_reference(args.repvit, "utils.py")
    ref = load_module("repvit_reference", text)
    utils = load_module("repvit_reference_utils", utils_text)
    weights, x, outputs = truncated_reference(ref)
    fixture = {
        "source": {"repo": "THU-MIG/RepViT", "file": "model/repvit.py", "commit": commit,
                   "timm": str(timm.__version__), "torch": str(torch.__version__)},
        "blocks": {n: block_table(getattr(ref, f"repvit_{n}")(), ref) for n in CONFIGS},
        "params": {n: param_counts(ref, utils, n) for n in CONFIGS},
        "weights": weights, "input": x, "outputs": outputs,
    }
    torch.save(fixture, args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB from {commit[:7]}; params {fixture['params']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
