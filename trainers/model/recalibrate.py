"""BatchNorm recalibration of a subnet taken from a supernet, and the fixed calibration set it uses.

A supernet's BatchNorm running statistics were accumulated over many paths and fit none of them
(SPOS, OFA). Before a subnet is scored, :func:`recalibrate_bn` resets every BatchNorm's running
statistics, switches it to a cumulative average (``momentum=None``), forwards a fixed set of
calibration images with only the BatchNorms in training mode and no gradient, then restores each
BatchNorm's momentum (Ultralytics' 0.03) and eval mode. Weights are untouched.

:func:`calibration_images` is that fixed set: the first ``count`` images of a data YAML's train
split (sorted by path), each letterboxed to the validation size as Ultralytics' validator does
(no mosaic, no augmentation), as one float tensor in [0, 1]. Never calibrate in fp16: a supernet
checkpoint is saved in half precision, so load it with ``.float()`` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["batch_norms", "calibration_images", "recalibrate_bn"]


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (1d/2d/3d, in module order)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Tensor, batch: int = 16) -> nn.Module:
    """Recompute ``model``'s BatchNorm running statistics on ``images`` (N, 3, H, W in [0, 1]); returns ``model``.

    Cumulative average over batches of ``batch`` images (equal-sized batches make the running mean
    the mean over the whole set). The model ends in eval mode; its parameters are not changed.
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    norms = batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
        bn.train()
    try:
        param = next(model.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else (images.device, images.dtype)
        for chunk in images.split(max(1, batch)):
            model(chunk.to(device=device, dtype=dtype))
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.eval()
    return model


def _train_images(data: str | Path) -> list[Path]:
    """The image files of a data YAML's train split (a folder, a list file, or a list of them), sorted."""
    from ultralytics.data.utils import IMG_FORMATS, check_det_dataset

    info = check_det_dataset(str(data), autodownload=False)
    sources = info["train"] if isinstance(info["train"], list) else [info["train"]]
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files += [p for p in src.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS]
        elif src.is_file():
            root = src.parent
            for line in src.read_text().splitlines():
                if line.strip():
                    p = Path(line.strip())
                    files.append(p if p.is_absolute() else (root / p).resolve())
    return sorted(files)


def calibration_images(data: str | Path, imgsz: int, count: int) -> Tensor:
    """The fixed calibration set: the first ``count`` train images of ``data``, letterboxed to ``imgsz``.

    A (min(count, available), 3, imgsz, imgsz) float tensor in [0, 1], RGB; ``ValueError`` when the
    train split has no image.
    """
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox

    files = _train_images(data)[:count]
    if not files:
        raise ValueError(f"{data}: the train split has no image to calibrate BatchNorm with")
    letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False, scaleup=True)
    out = []
    for f in files:
        img = cv2.imread(str(f))
        if img is None:
            raise ValueError(f"{f}: not a readable image")
        boxed: Any = letterbox(image=img)
        out.append(torch.from_numpy(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))))
    return torch.stack(out).float() / 255.0
