"""Tests of ``trainers.train.data``: the synthetic dataset is deterministic, valid for Ultralytics, reused."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.train.data import (
    CLASSES,
    MANIFEST_NAME,
    MAX_OBJECTS,
    YAML_NAME,
    SynthSpec,
    generate_synth,
    is_complete,
    read_manifest,
)

REPO = Path(__file__).resolve().parents[2]
TINY = {"n_train": 8, "n_val": 4, "size": 64}


def quiet(_: str) -> None:
    """A progress sink that drops messages."""


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by path relative to it."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_labels(path: Path) -> np.ndarray:
    """A label file as an ``(N, 5)`` float array."""
    return np.array([[float(v) for v in ln.split()] for ln in path.read_text().splitlines()]).reshape(-1, 5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset (8 + 4 images of 64 px, seed 0); returns its folder."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_synth(out, seed=0, progress=quiet, **TINY)
    return out


def test_layout_yaml_and_manifest(tiny: Path) -> None:
    assert sorted(p.name for p in tiny.iterdir()) == sorted(["images", "labels", YAML_NAME, MANIFEST_NAME])
    text = (tiny / YAML_NAME).read_text()
    assert "path:" not in text
    assert "train: images/train\n" in text and "val: images/val\n" in text
    assert all(f"  {i}: {name}\n" in text for i, name in enumerate(CLASSES))
    assert read_manifest(tiny) == SynthSpec(seed=0, **TINY).manifest()
    assert not list(tiny.parent.glob(".tiny.tmp-*")), "the temporary folder must be gone"


def test_same_seed_gives_identical_files(tiny: Path, tmp_path: Path) -> None:
    again = generate_synth(tmp_path / "again", seed=0, progress=quiet, **TINY)
    assert again == tmp_path / "again" / YAML_NAME
    assert file_hashes(tmp_path / "again") == file_hashes(tiny)


def test_returns_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = generate_synth("rel", n_train=1, n_val=1, size=32, progress=quiet)
    assert path.is_absolute() and path == tmp_path / "rel" / YAML_NAME


def test_other_seed_gives_other_images(tiny: Path, tmp_path: Path) -> None:
    generate_synth(tmp_path / "s1", seed=1, progress=quiet, **TINY)
    ours, theirs = file_hashes(tiny), file_hashes(tmp_path / "s1")
    assert ours.keys() == theirs.keys()
    images = [k for k in ours if k.endswith(".png")]
    assert all(ours[k] != theirs[k] for k in images)


def test_train_and_val_images_differ(tiny: Path) -> None:
    hashes = file_hashes(tiny)
    train = {h for k, h in hashes.items() if k.startswith("images/train/")}
    val = {h for k, h in hashes.items() if k.startswith("images/val/")}
    assert len(train) == 8 and len(val) == 4
    assert not train & val


def test_images_and_labels_are_consistent(tiny: Path) -> None:
    for split, n in (("train", 8), ("val", 4)):
        images = sorted((tiny / "images" / split).glob("*.png"))
        labels = sorted((tiny / "labels" / split).glob("*.txt"))
        assert [p.stem for p in images] == [p.stem for p in labels] == [f"{i:06d}" for i in range(n)]
        for image, label in zip(images, labels):
            with Image.open(image) as im:
                assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))
            lb = read_labels(label)
            assert 1 <= len(lb) <= MAX_OBJECTS
            assert np.all(lb[:, 0] == np.round(lb[:, 0])) and lb[:, 0].min() >= 0 and lb[:, 0].max() < len(CLASSES)
            cx, cy, w, h = lb[:, 1:].T
            assert np.all((w > 0.09) & (h > 0.09)), "objects span at least ~10% of the image side"
            assert np.all((cx - w / 2 >= -1e-6) & (cx + w / 2 <= 1 + 1e-6))
            assert np.all((cy - h / 2 >= -1e-6) & (cy + h / 2 <= 1 + 1e-6))


def test_all_classes_occur(tmp_path: Path) -> None:
    generate_synth(tmp_path / "d", seed=3, n_train=30, n_val=1, size=32, progress=quiet)
    classes = np.concatenate([read_labels(p)[:, 0] for p in (tmp_path / "d" / "labels" / "train").glob("*.txt")])
    assert set(classes.astype(int)) == set(range(len(CLASSES)))


def test_ultralytics_accepts_the_dataset(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics.data.utils import check_det_dataset, img2label_paths, verify_image_label

    data = check_det_dataset(str(tiny / YAML_NAME), autodownload=False)
    assert data["nc"] == len(CLASSES) and data["names"] == dict(enumerate(CLASSES))
    assert Path(data["train"]) == (tiny / "images" / "train").resolve()
    assert Path(data["val"]) == (tiny / "images" / "val").resolve()
    for split in ("train", "val"):
        images: list[str | Path] = sorted(str(p) for p in Path(data[split]).glob("*.png"))
        for im_file, lb_file in zip(images, img2label_paths(images)):
            im, lb, shape, _, _, nm, nf, ne, nc, msg = verify_image_label(
                (im_file, lb_file, "", False, len(CLASSES), 0, 0, False))
            assert (nm, nf, ne, nc, msg) == (0, 1, 0, 0, ""), msg
            assert shape == (64, 64)
            np.testing.assert_allclose(lb, read_labels(Path(lb_file)), atol=1e-6)


def test_ultralytics_dataset_loads_every_image(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    copy = tmp_path / "copy"
    generate_synth(copy, seed=0, progress=quiet, **TINY)  # the dataset writes a labels cache: keep `tiny` clean
    data = check_det_dataset(str(copy / YAML_NAME), autodownload=False)
    ds = YOLODataset(img_path=data["train"], imgsz=64, augment=False, data=data, task="detect")
    assert len(ds) == 8
    assert sum(len(lb["cls"]) for lb in ds.labels) == sum(len(read_labels(p)) for p in (copy / "labels/train").iterdir()
                                                          if p.suffix == ".txt")
    assert ds[0]["img"].shape == (3, 64, 64)


def test_second_call_reuses_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate_synth(out, seed=0, progress=quiet, **TINY)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    messages: list[str] = []
    assert generate_synth(out, seed=0, progress=messages.append, **TINY) == out / YAML_NAME
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert len(messages) == 1 and messages[0].startswith("synth: reusing")


def test_other_parameters_replace_our_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate_synth(out, seed=0, progress=quiet, **TINY)
    generate_synth(out, seed=0, n_train=3, n_val=2, size=48, progress=quiet)
    assert len(list((out / "images" / "train").iterdir())) == 3
    assert read_manifest(out) == SynthSpec(0, 3, 2, 48).manifest()
    assert is_complete(out, SynthSpec(0, 3, 2, 48)) and not is_complete(out, SynthSpec(0, **TINY))


def test_missing_file_is_regenerated(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate_synth(out, seed=0, progress=quiet, **TINY)
    (out / "images" / "val" / "000003.png").unlink()
    assert not is_complete(out, SynthSpec(0, **TINY))
    generate_synth(out, seed=0, progress=quiet, **TINY)
    assert file_hashes(out) == file_hashes(tiny)


def test_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="out must be empty or a synthetic dataset folder"):
        generate_synth(tmp_path, progress=quiet, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_train": 0}, r"n_train must be an integer in \[1, 1000000\], got 0"),
    ({"n_val": -2}, r"n_val must be an integer in \[1, 1000000\], got -2"),
    ({"size": 16}, r"size must be an integer in \[32, 2048\], got 16"),
    ({"seed": -1}, r"seed must be an integer in \[0, 4294967295\], got -1"),
    ({"size": 64.0}, r"size must be an integer .* got 64.0"),
])
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_synth(tmp_path / "d", progress=quiet, **{**TINY, **kwargs})  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m trainers.train.data ...`` in ``cwd`` with the repository importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "trainers.train.data", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("args", "expected"), [
    (["synth", "--train", "-1"], "--train must be an integer in [1, 1000000], got -1"),
    (["synth", "--val", "0"], "--val must be an integer in [1, 1000000], got 0"),
    (["synth", "--size", "8"], "--size must be an integer in [32, 2048], got 8"),
    (["synth", "--seed", "-5"], "--seed must be an integer in [0, 4294967295], got -5"),
    (["synth", "--train", "many"], "argument --train: invalid int value: 'many'"),
    (["synth", "--colour", "red"], "unrecognized arguments: --colour red"),
    ([], "the following arguments are required: command"),
])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    r = run_cli(*args, "--out", "d", cwd=tmp_path) if args else run_cli(cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and expected in r.stderr
    assert not (tmp_path / "d").exists()


def test_cli_foreign_folder_exit_2(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    r = run_cli("synth", "--out", "d", "--train", "2", "--val", "1", "--size", "32", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "out must be empty" in r.stderr


def test_cli_generates_then_reuses(tmp_path: Path) -> None:
    args = ("synth", "--out", "d", "--train", "2", "--val", "1", "--size", "32", "--seed", "7")
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{tmp_path / 'd' / YAML_NAME}\n"
    assert "synth: writing 2+1 images of 32 px (seed 7)" in first.stderr
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert second.stderr.startswith("synth: reusing the complete dataset")


def test_module_imports_no_torch_or_ultralytics() -> None:
    code = "import sys, trainers.train.data; print(sorted({'torch', 'ultralytics'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stderr
