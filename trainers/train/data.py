"""The embedded default dataset: synthetic shapes in Ultralytics detection format.

``python -m trainers.train.data synth --out studies/data/synth`` writes, once::

    synth.yaml              train: images/train, val: images/val, names (no ``path:`` key:
                            Ultralytics resolves both relative to the YAML's folder)
    images/{train,val}/NNNNNN.png
    labels/{train,val}/NNNNNN.txt   one "class cx cy w h" line per object, normalized
    manifest.json           the parameters; written last, so its presence means "complete"

Every image comes from its own ``numpy`` generator seeded with ``(seed, split, index)``
and is drawn with PIL only, so the same parameters give byte-identical files and the train
and val images differ. Each image holds 1-6 filled or hollow shapes (five classes, class
given by shape only: colour, size, position and rotation are random) on a gradient
background with noise, lines and irregular blobs that are not objects; objects may overlap
a little and later ones occlude earlier ones.

The defaults (320 train / 80 val images of 128 px) are sized for the search budget on two
CPU cores: with the trial recipe (AdamW lr0 0.003, an optimizer step every batch) a stock
YOLO26n reaches mAP50-95 0.43 in 12 epochs at 128 px (113 s of training), searched
architectures up to 0.54; ``bench/synth_train.py`` measures it.

This module imports numpy and PIL only; it never imports torch or Ultralytics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainers.cli import OneLineParser, fail, log

CLASSES = ("circle", "square", "triangle", "cross", "ring")
SPLITS = ("train", "val")
YAML_NAME = "synth.yaml"
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2  # bump when the drawing changes: a stored dataset with another version is regenerated

DEFAULT_N_TRAIN = 320
DEFAULT_N_VAL = 80
DEFAULT_SIZE = 128  # the default training size: no resampling
MIN_SIZE, MAX_SIZE = 32, 2048
MAX_IMAGES = 1_000_000

MIN_OBJECTS, MAX_OBJECTS = 1, 6  # objects drawn per image (fewer when no free spot is found)
OBJECT_FRACTION = (0.14, 0.40)  # object diameter as a fraction of the image side
CLASS_SCALE = (1.0, 1.0, 1.25, 1.0, 1.0)  # triangles fill the least of their circle: draw them larger
MAX_ROTATION = math.radians(20)  # polygons stay near upright: their boxes stay tight
MAX_COVERED = 0.35  # an object's box may be covered at most this much by an earlier one's box
MIN_CONTRAST = 90  # summed |RGB| difference between an object and the background under it

Rng = np.random.Generator
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class SynthSpec:
    """The parameters of a synthetic dataset; equal specs give byte-identical files."""

    seed: int = 0
    n_train: int = DEFAULT_N_TRAIN
    n_val: int = DEFAULT_N_VAL
    size: int = DEFAULT_SIZE

    def validate(self, names: dict[str, str] | None = None) -> SynthSpec:
        """Return ``self``, or raise ``ValueError`` naming the field, the allowed range and the value.

        ``names`` maps field names to the names the caller knows them by (CLI flags).
        """
        checks = (("seed", self.seed, 0, 2**32 - 1), ("n_train", self.n_train, 1, MAX_IMAGES),
                  ("n_val", self.n_val, 1, MAX_IMAGES), ("size", self.size, MIN_SIZE, MAX_SIZE))
        for field, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                name = (names or {}).get(field, field)
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        return self

    def count(self, split: str) -> int:
        """Number of images of ``split``."""
        return self.n_train if split == "train" else self.n_val

    def manifest(self) -> dict[str, object]:
        """What ``manifest.json`` records: the parameters, the classes and the format version."""
        return {"generator": "trainers.train.data", "version": FORMAT_VERSION, "classes": list(CLASSES), **asdict(self)}


# --------------------------------------------------------------------------- drawing


def _gradient_background(rng: Rng, size: int) -> np.ndarray:
    """A linear two-colour gradient in a random direction, float32 ``(size, size, 3)``."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0[None, None, :] + t[..., None] * (c1 - c0)[None, None, :]).astype(np.float32)


def _random_colour(rng: Rng) -> tuple[int, int, int]:
    """A uniformly random RGB colour."""
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return r, g, b


def _contrasting_colour(rng: Rng, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour at least :data:`MIN_CONTRAST` away from ``under`` (best of 20 draws)."""
    best, best_gap = (0, 0, 0), -1.0
    for _ in range(20):
        colour = _random_colour(rng)
        gap = float(np.abs(np.asarray(colour, dtype=np.float32) - under).sum())
        if gap >= MIN_CONTRAST:
            return colour
        if gap > best_gap:
            best, best_gap = colour, gap
    return best


def _draw_lines(rng: Rng, draw: ImageDraw.ImageDraw, size: int) -> None:
    """1-5 thin straight lines of random colours across the image: sharp edges that are not objects."""
    for _ in range(int(rng.integers(1, 6))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, size=4))
        width = max(1, int(rng.integers(1, 3) * size / 160 + 0.5))
        draw.line((x0, y0, x1, y1), fill=_random_colour(rng), width=width)


def _paste_soft_blobs(rng: Rng, image: Image.Image) -> None:
    """0-3 blurred ellipses of random colours: blobs with no edge, so never mistaken for an object."""
    size = image.size[0]
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = (float(v) for v in rng.uniform(0, size, size=2))
        rx, ry = (float(v) for v in rng.uniform(0.04, 0.15, size=2) * size)
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.integers(90, 220)))
        image.paste(_random_colour(rng), (0, 0, size, size), mask.filter(ImageFilter.GaussianBlur(0.5 * max(rx, ry))))


def _rotated(points: Sequence[tuple[float, float]], angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """``points`` (relative to the centre) rotated by ``angle`` radians and moved to ``(cx, cy)``."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _shape_outline(cls: int, r: float, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """Polygon vertices of a square (1), triangle (2) or cross (3) of circumradius ``r``."""
    if cls == 1:
        h = r / math.sqrt(2)
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif cls == 2:
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    else:
        a, w = r / math.sqrt(1 + 1 / 9), r / math.sqrt(1 + 1 / 9) / 3  # arm half-length a, half-width w
        pts = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w),
               (-w, -w)]
    return _rotated(pts, angle, cx, cy)


def _rotation(rng: Rng, cls: int) -> float:
    """A rotation in radians within :data:`MAX_ROTATION` of upright; triangles also point down half the time."""
    jitter = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    return jitter + (math.pi if cls == 2 and rng.random() < 0.5 else 0.0)


def _draw_object(rng: Rng, draw: ImageDraw.ImageDraw, cls: int, cx: float, cy: float, r: float,
                 colour: tuple[int, int, int]) -> Box:
    """Draw one object of class ``cls`` centred at ``(cx, cy)``; return its tight box."""
    if cls in (0, 4):  # circle, ring
        box = (cx - r, cy - r, cx + r, cy + r)
        width = max(2, int(round(r * rng.uniform(0.25, 0.4)))) if cls == 4 else 0
        draw.ellipse(box, fill=None if width else colour, outline=colour, width=width or 1)
        return box
    points = _shape_outline(cls, r, _rotation(rng, cls), cx, cy)
    draw.polygon(points, fill=colour)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _covered_fraction(box: Box, others: Sequence[Box]) -> float:
    """The largest fraction of either box's area that one of ``others`` overlaps."""
    worst = 0.0
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw > 0 and ih > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (o[2] - o[0]) * (o[3] - o[1]))
            worst = max(worst, iw * ih / smaller)
    return worst


def _place(rng: Rng, size: int, placed: Sequence[Box], scale: float) -> tuple[float, float, float] | None:
    """Centre and radius of a new object inside the image and not hiding (or hidden by) ``placed``.

    The radius is drawn from :data:`OBJECT_FRACTION` times ``scale``.
    """
    for _ in range(30):
        r = float(rng.uniform(*OBJECT_FRACTION)) * scale * size / 2
        cx, cy = (float(v) for v in rng.uniform(r, size - r, size=2))
        if _covered_fraction((cx - r, cy - r, cx + r, cy + r), placed) <= MAX_COVERED:
            return cx, cy, r
    return None


def render_image(rng: Rng, size: int) -> tuple[Image.Image, list[tuple[int, Box]]]:
    """One synthetic RGB image and its objects ``(class, box in pixels)``; uses only ``rng``."""
    background = _gradient_background(rng, size)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    _paste_soft_blobs(rng, image)
    draw = ImageDraw.Draw(image)
    _draw_lines(rng, draw, size)
    objects: list[tuple[int, Box]] = []
    for _ in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        cls = int(rng.integers(0, len(CLASSES)))
        spot = _place(rng, size, [b for _, b in objects], CLASS_SCALE[cls])
        if spot is None:
            continue
        cx, cy, r = spot
        under = background[min(int(cy), size - 1), min(int(cx), size - 1)]
        objects.append((cls, _draw_object(rng, draw, cls, cx, cy, r, _contrasting_colour(rng, under))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 10), size=(size, size, 3))
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB"), objects


def label_lines(objects: Sequence[tuple[int, Box]], size: int) -> str:
    """Ultralytics label text: ``class cx cy w h`` normalized to ``[0, 1]``, one object per line."""
    lines = []
    for cls, (x0, y0, x1, y1) in objects:
        x0, y0, x1, y1 = (min(max(v / size, 0.0), 1.0) for v in (x0, y0, x1, y1))
        lines.append(f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files


def image_rng(seed: int, split: str, index: int) -> Rng:
    """The generator of one image: independent per ``(seed, split, index)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def data_yaml_text(spec: SynthSpec) -> str:
    """The data YAML; no ``path:`` key, so Ultralytics resolves paths relative to the YAML's folder."""
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASSES))
    return (f"# Synthetic shapes, written by `python -m trainers.train.data synth` (seed {spec.seed}, "
            f"{spec.n_train} train / {spec.n_val} val images, {spec.size} px)\n"
            f"train: images/train\nval: images/val\nnc: {len(CLASSES)}\nnames:\n{names}")


def _write_split(root: Path, spec: SynthSpec, split: str, progress: Callable[[str], None]) -> None:
    """Write the images and labels of one split under ``root``."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    n = spec.count(split)
    step = max(1, n // 4)
    for i in range(n):
        image, objects = render_image(image_rng(spec.seed, split, i), spec.size)
        image.save(images / f"{i:06d}.png", format="PNG")
        (labels / f"{i:06d}.txt").write_text(label_lines(objects, spec.size))
        if (i + 1) % step == 0 or i + 1 == n:
            progress(f"synth: {split} {i + 1}/{n} images")


def read_manifest(out: Path) -> dict[str, object] | None:
    """The manifest of a dataset folder, or ``None`` when there is none or it is unreadable."""
    try:
        data = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(out: Path, spec: SynthSpec) -> bool:
    """Whether ``out`` holds the complete dataset of ``spec`` (manifest matches, every file present)."""
    if read_manifest(out) != spec.manifest() or not (out / YAML_NAME).is_file():
        return False
    for split in SPLITS:
        n = spec.count(split)
        for sub, ext in (("images", ".png"), ("labels", ".txt")):
            folder = out / sub / split
            if not folder.is_dir() or sum(1 for p in folder.iterdir() if p.suffix == ext) != n:
                return False
            if not (folder / f"{n - 1:06d}{ext}").is_file():
                return False
    return True


def _check_replaceable(out: Path) -> None:
    """Raise ``ValueError`` unless ``out`` is absent, empty, or one of our datasets (has a manifest)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the file {str(out)!r}")
    if out.is_dir() and any(out.iterdir()) and read_manifest(out) is None:
        raise ValueError(f"out must be empty or a synthetic dataset folder (with {MANIFEST_NAME}), "
                         f"got the non-empty folder {str(out)!r}")


def _publish(tmp: Path, out: Path, spec: SynthSpec) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an older dataset of ours."""
    if out.is_dir() and is_complete(out, spec):  # another process finished first
        shutil.rmtree(tmp)
        return
    if out.is_dir():
        _check_replaceable(out)
        shutil.rmtree(out)
    os.replace(tmp, out)


def generate_synth(out: Path | str, seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_val: int = DEFAULT_N_VAL,
                   size: int = DEFAULT_SIZE, progress: Callable[[str], None] = log) -> Path:
    """Write the dataset to ``out`` unless it already holds it; return the data YAML's absolute path.

    The files are written to a temporary sibling folder and moved into place when complete,
    so an interrupted run leaves no half dataset behind. A folder holding one of our datasets
    with other parameters (or an older format) is replaced; any other non-empty folder is
    refused with ``ValueError``, as are out-of-range parameters.
    """
    spec = SynthSpec(seed=seed, n_train=n_train, n_val=n_val, size=size).validate()
    out = Path(os.path.abspath(out))  # absolute: trials may run in another working directory
    if is_complete(out, spec):
        progress(f"synth: reusing the complete dataset in {out} (seed {seed}, {n_train}+{n_val} images, {size} px)")
        return out / YAML_NAME
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    progress(f"synth: writing {n_train}+{n_val} images of {size} px (seed {seed}) to {out}")
    for split in SPLITS:
        _write_split(tmp, spec, split, progress)
    (tmp / YAML_NAME).write_text(data_yaml_text(spec))
    (tmp / MANIFEST_NAME).write_text(json.dumps(spec.manifest(), indent=2, sort_keys=True) + "\n")
    _publish(tmp, out, spec)
    return out / YAML_NAME


def ensure_synth(out: Path | str, progress: Callable[[str], None] = log) -> Path:
    """The default dataset in ``out`` (generated on first use); returns the data YAML's absolute path."""
    return generate_synth(out, progress=progress)


# --------------------------------------------------------------------------- CLI


CLI_FLAGS = {"seed": "--seed", "n_train": "--train", "n_val": "--val", "size": "--size"}


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainers.train.data", description="The embedded synthetic detection dataset.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="generate (or reuse) the synthetic shapes dataset")
    s.add_argument("--out", type=Path, default=Path("studies/data/synth"), help="dataset folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train", dest="n_train", type=int, default=DEFAULT_N_TRAIN, help="training images")
    s.add_argument("--val", dest="n_val", type=int, default=DEFAULT_N_VAL, help="validation images")
    s.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainers.train.data synth ...``: prints the data YAML's path on stdout."""
    args = _parser().parse_args(argv)
    spec = SynthSpec(seed=args.seed, n_train=args.n_train, n_val=args.n_val, size=args.size)
    try:
        spec.validate(CLI_FLAGS)
        path = generate_synth(args.out, **asdict(spec))
    except ValueError as e:
        fail(str(e))
    except OSError as e:  # unwritable folder, full disk: not bad input, but still one line
        fail(f"cannot write the dataset to {str(args.out)!r}: {e}", code=1)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
