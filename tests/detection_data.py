"""The detection data the tests train on: coco8 from ``../shared`` when present, else a tiny synthetic set.

Ultralytics writes ``labels/*.cache`` next to a dataset, so every caller gets a private copy.
On a machine without ``../shared/datasets`` (a bare CI runner) the project's own generator
makes an 8 + 8 image set, so the training tests still run instead of being skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

COCO8 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco8"


def private_detection_data(dst: Path) -> Path:
    """coco8 copied under ``dst`` (or a generated synthetic set); returns its data YAML."""
    if (COCO8 / "coco8.yaml").is_file():
        shutil.copytree(COCO8, dst / "coco8")
        return dst / "coco8" / "coco8.yaml"
    from trainers.train.data import generate_synth

    return Path(generate_synth(dst / "synth", seed=0, n_train=8, n_val=8, size=64, progress=lambda _: None))

