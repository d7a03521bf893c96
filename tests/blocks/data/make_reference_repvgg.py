"""Write ``repvgg_reference.pt``: outputs of the OFFICIAL RepVGG and YOLOv6 code on fixed weights and inputs.

``tests/blocks/test_repblock.py`` loads these weights into our ``RepConv``, ``RepBlock`` and RepVGG-branch
Detect head and compares outputs (float32, 1e-5). The reference code is never imported by the tests,
only by this script, and none of it is copied into the project.

Usage (either a checkout or a bare git mirror, e.g. what the ``fetch`` tool leaves under /work/.mirror)::

    python tests/blocks/data/make_reference_repvgg.py \\
        --repvgg /work/.mirror/DingXiaoH+RepVGG/repo --yolov6 /work/.mirror/meituan+YOLOv6/repo

What it builds, all in float32 on CPU, every BatchNorm's affine parameters and running statistics
randomized (fresh statistics, mean 0 and var 1, would hide a wrong fold):

- ``repvgg_block``: DingXiaoH/RepVGG ``repvgg.RepVGGBlock`` in three configurations (identity branch,
  stride 2 with a channel change, groups): its training-form output, its own fused kernel and bias
  (``get_equivalent_kernel_bias``) and its output after ``switch_to_deploy``.
- ``repblock``: YOLOv6 ``yolov6.layers.common.RepBlock(3, 4, n=3)`` (``block=RepVGGBlock``, ReLU).
- ``head``: YOLOv6's Efficient Decoupled Head, ``yolov6.models.effidehead.Detect``, run in training mode
  (its raw per-anchor class scores after sigmoid and its box regression), with two scales (4 and 8
  input channels). Official YOLOv6 builds that head's ``cls_convs``/``reg_convs`` from ``ConvBNSiLU``
  (``build_effidehead_layer``), not from RepVGG blocks; here each is one official ``RepVGGBlock``
  (``head_stem_layers: 1``; the stacking is what ``repblock`` checks) whose activation is set to SiLU
  (YOLOv6's head activation), at YOLO26's branch widths (box: ``c2 = 16``, class: ``c3 = 4`` for
  ``nc = 3``), with an identity ``stem`` (YOLO26 has no shared stem), ``reg_max = 0`` and
  ``use_dfl=False`` (4 box outputs, DFL-free like YOLO26).

Stubbed imports (unrelated to these modules): ``yolov6.utils.general`` imports ``pkg_resources`` and
``requests`` for checkpoint downloads and version checks; it is replaced by a module whose
``check_version`` returns ``True`` (only read by anchor generation in eval mode, not run here) and whose
``download_ckpt``/``dist2bbox`` raise if called. ``repvgg.py``'s ``se_block`` import is the real file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import types
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
from torch import nn

OUT = Path(__file__).resolve().parent / "repvgg_reference.pt"
SEED = 20240535


REPVGG_FILES = ("repvgg.py", "se_block.py")
YOLOV6_FILES = ("yolov6/__init__.py", "yolov6/layers/common.py", "yolov6/models/effidehead.py", "yolov6/assigners")


def source_tree(path: Path, tmp: Path, files: tuple[str, ...]) -> tuple[Path, str]:
    """A directory holding ``files`` of ``path`` (a checkout as is, a bare git dir extracted) and its commit.

    Only the files the reference modules import are extracted: a mirror may lack its largest files.
    """
    git = ["git", f"--git-dir={path / '.git' if (path / '.git').exists() else path}"]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    if (path / ".git").exists():
        return path, commit
    blob = subprocess.run([*git, "archive", "HEAD", *files], capture_output=True, check=True).stdout
    out = tmp / path.parent.name
    out.mkdir()
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(out, filter="data")
    return out, commit


def stub_yolov6_general() -> None:
    """Put a stand-in ``yolov6.utils.general`` in ``sys.modules`` (see the module docstring)."""
    def unused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("stubbed: not part of the modules under test")

    general = types.ModuleType("yolov6.utils.general")
    general.check_version = lambda *a, **k: True  # type: ignore[attr-defined]
    general.download_ckpt = unused  # type: ignore[attr-defined]
    general.dist2bbox = unused  # type: ignore[attr-defined]
    sys.modules["yolov6.utils.general"] = general


def randomize_(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Parameters ``N(0, 0.5^2)``; BatchNorm weight ``U(0.5, 1.5)``, running mean ``N(0, 1)``, var ``U(0.5, 2)``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            else:
                for p in m.parameters(recurse=False):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s state dict (reference names), BatchNorm batch counters left out."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def repvgg_blocks(repvgg: Any, gen: torch.Generator) -> list[dict[str, Any]]:
    """DingXiaoH's RepVGGBlock: training-form output, its own fused kernel/bias, deploy-form output."""
    out = []
    for c1, c2, s, g in [(4, 4, 1, 1), (3, 5, 2, 1), (4, 6, 1, 2)]:
        block = randomize_(repvgg.RepVGGBlock(c1, c2, kernel_size=3, stride=s, padding=1, groups=g), gen)
        x = torch.randn(1, c1, 5, 6, generator=gen)
        with torch.no_grad():
            y = block(x)
            w, b = block.get_equivalent_kernel_bias()
            weights = state(block)
            block.switch_to_deploy()
            y_deploy = block(x)
        out.append({"args": {"c1": c1, "c2": c2, "s": s, "g": g}, "state_dict": weights, "x": x, "y": y,
                    "fused_weight": w.detach().clone(), "fused_bias": b.detach().clone(), "y_deploy": y_deploy})
    return out


def repblock(common: Any, gen: torch.Generator) -> dict[str, Any]:
    """YOLOv6's RepBlock(3, 4, n=3) of RepVGGBlocks (ReLU): its output."""
    block = randomize_(common.RepBlock(3, 4, n=3, block=common.RepVGGBlock), gen)
    x = torch.randn(1, 3, 5, 6, generator=gen)
    with torch.no_grad():
        y = block(x)
    return {"args": {"c1": 3, "c2": 4, "n": 3}, "state_dict": state(block), "x": x, "y": y}


def head(common: Any, effidehead: Any, gen: torch.Generator) -> dict[str, Any]:
    """YOLOv6's Efficient Decoupled Head (training-mode forward) with one-RepVGGBlock (SiLU) cls/reg convs."""
    ch, nc, c2, c3, layers = (4, 8), 3, 16, 4, 1

    def stack(c_in: int, c_mid: int) -> nn.Sequential:
        blocks = [common.RepVGGBlock(c_in if i == 0 else c_mid, c_mid) for i in range(layers)]
        for b in blocks:
            b.nonlinearity = nn.SiLU()
        return nn.Sequential(*blocks)

    head_layers: list[nn.Module] = []
    for c in ch:  # the order build_effidehead_layer uses: stem, cls_conv, reg_conv, cls_pred, reg_pred
        head_layers += [nn.Identity(), stack(c, c3), stack(c, c2), nn.Conv2d(c3, nc, 1), nn.Conv2d(c2, 4, 1)]
    detect = effidehead.Detect(nc, num_layers=len(ch), head_layers=nn.Sequential(*head_layers), use_dfl=False,
                               reg_max=0)
    randomize_(detect, gen)
    xs = [torch.randn(1, c, 4 - i, 5 - i, generator=gen) for i, c in enumerate(ch)]
    detect.train()  # the raw outputs; BatchNorm in eval mode (running statistics), as in a fused deployment
    for m in detect.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        _, cls_scores, reg_dists = detect([x.clone() for x in xs])
    return {"args": {"ch": list(ch), "nc": nc, "c2": c2, "c3": c3, "layers": layers},
            "state_dict": state(detect), "x": xs, "cls_scores": cls_scores, "reg_dists": reg_dists}


def main() -> None:
    """Build every reference module, run it, save the fixture."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repvgg", type=Path, required=True, help="DingXiaoH/RepVGG checkout or bare git dir")
    p.add_argument("--yolov6", type=Path, required=True, help="meituan/YOLOv6 checkout or bare git dir")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.manual_seed(SEED)  # the reference constructors draw their initial weights (all overwritten)
    gen = torch.Generator().manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        repvgg_dir, repvgg_commit = source_tree(args.repvgg, Path(tmp), REPVGG_FILES)
        yolov6_dir, yolov6_commit = source_tree(args.yolov6, Path(tmp), YOLOV6_FILES)
        sys.path[:0] = [str(repvgg_dir), str(yolov6_dir)]
        stub_yolov6_general()
        import repvgg  # DingXiaoH/RepVGG
        from yolov6.layers import common
        from yolov6.models import effidehead

        fixture = {
            "meta": {"repvgg_commit": repvgg_commit, "yolov6_commit": yolov6_commit, "torch": str(torch.__version__),
                     "seed": SEED, "bn_eps": 1e-5, "generator": "tests/blocks/data/make_reference_repvgg.py"},
            "repvgg_block": repvgg_blocks(repvgg, gen),
            "repblock": repblock(common, gen),
            "head": head(common, effidehead, gen),
        }
    torch.save(fixture, args.out, _use_new_zipfile_serialization=False)  # the zip format pads every small tensor
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
