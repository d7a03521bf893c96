"""One trial end to end: ``run_trial`` on a copy of coco8 (CPU, 64 px): figures, checkpoint, fused vs unfused.

The trials run in a fresh, empty working directory with the device locks redirected to
``tmp_path``, so a test can check that a trial writes nothing outside its ``out`` folder
(no ``runs/``). The fused-vs-unfused checks load the ``best.pt`` of a trained rep trial.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trial_helpers import EVAL_IMGSZ, IMGSZ, REP_ARCH, Trained

from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture
from trainers.train.dataset import class_count
from trainers.train.results import TrialResult, TrialSettings
from trainers.train.trial import run_trial

pytestmark = pytest.mark.usefixtures("locks_in_tmp")


def _run_in_empty_dir(root: Path, arch: Architecture, data: Path, **kw: Any) -> Trained:
    """``run_trial`` from an empty working directory, locks under ``root``; settings at 64 px on the CPU."""
    cwd, out = root / "cwd", root / "out" / "trial"
    cwd.mkdir(parents=True)
    settings = TrialSettings.from_dict({"data": str(data), "out": str(out), "epochs": 1, "imgsz": IMGSZ, "batch": 4,
                                "device": "cpu", "latency_imgsz": IMGSZ, "latency_device": "cpu", **kw})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("REPNAS_LOCK_DIR", str(root / "locks"))
        mp.setenv("YOLO_OFFLINE", "1")
        t0 = time.time()
        result = run_trial(arch, settings)
    return Trained(arch, result, out, cwd, time.time() - t0, nc=class_count(data))


@pytest.fixture(scope="module")
def baseline_trial(tmp_path_factory: pytest.TempPathFactory, coco8_copy: Path) -> Trained:
    """The stock YOLO26n trained one epoch on coco8 at 64 px."""
    return _run_in_empty_dir(tmp_path_factory.mktemp("baseline"), Architecture.baseline(), coco8_copy)


@pytest.fixture(scope="module")
def rep_trial(tmp_path_factory: pytest.TempPathFactory, coco8_copy: Path) -> Trained:
    """RepViT + OREPA + C3k2_RVB_SE stages trained one epoch on coco8 at 64 px."""
    return _run_in_empty_dir(tmp_path_factory.mktemp("rep"), REP_ARCH, coco8_copy, train_threads=2)


def test_cpu_training_runs_on_the_threads_asked_for(baseline_trial: Trained, rep_trial: Trained) -> None:
    from ultralytics.utils import NUM_THREADS

    assert isinstance(baseline_trial.result, TrialResult) and isinstance(rep_trial.result, TrialResult)
    assert baseline_trial.result.epoch_threads == (NUM_THREADS,)  # not asked: Ultralytics' cpu_count - 1
    assert rep_trial.result.epoch_threads == (2,)


def baseline_params(nc: int) -> int:
    """Parameters of the stock YOLO26n at ``nc`` classes (training form)."""
    from trainers.deploy.inference import count_params
    from trainers.model.build import build_model

    return count_params(build_model(Architecture.baseline(), nc=nc))


def _assert_sane_result(trial: Trained) -> None:
    from trainers.deploy.inference import count_params, gflops
    from trainers.model.build import build_model

    r = trial.result
    assert isinstance(r, TrialResult), r
    assert r.arch_hash == trial.arch.hash
    assert r.architecture == trial.arch.to_dict()
    assert 0.0 <= r.map50_95 <= 1.0 and 0.0 <= r.map50 <= 1.0
    assert r.map50 >= r.map50_95
    model = build_model(trial.arch, nc=trial.nc)
    assert r.params == count_params(model) > 0
    assert r.gflops > 0
    assert r.gflops == pytest.approx(gflops(model, IMGSZ), rel=1e-3, abs=1e-4)
    assert 0 < r.train_seconds < trial.seconds
    assert r.device == "cpu"
    assert r.epochs == 1
    assert len(r.epoch_map) == r.epochs and all(0.0 <= m <= 1.0 for m in r.epoch_map)
    assert TrialResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r  # what the search reads back

    weights = Path(r.weights)
    assert weights.is_file() and weights.name == "best.pt"
    assert weights.is_relative_to(trial.out.resolve())
    assert "runs" not in weights.parts

    lat = r.latency
    assert isinstance(lat, LatencyReport)
    assert 0 < lat.median_ms <= lat.p90_ms and lat.mean_ms > 0 and lat.cv >= 0
    assert lat.n >= 20  # the default CPU repeats
    assert (lat.mode, lat.dtype, lat.batch, lat.imgsz, lat.fused) == ("eager", "float32", 1, IMGSZ, True)
    assert "cpu" in lat.device and lat.threads >= 1 and lat.torch == torch.__version__

    assert TrialResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.to_dict()["ok"] is True
    # nothing outside the out folder: the working directory is still empty (no runs/, no studies/)
    assert sorted(p.name for p in trial.cwd.iterdir()) == []


def test_baseline_trial_returns_every_field_sane(baseline_trial: Trained) -> None:
    _assert_sane_result(baseline_trial)


def test_rep_trial_returns_every_field_sane(rep_trial: Trained) -> None:
    _assert_sane_result(rep_trial)
    assert rep_trial.result.params != baseline_params(rep_trial.nc)  # type: ignore[union-attr]


def test_rep_checkpoint_rebuilds_the_searched_architecture(rep_trial: Trained) -> None:
    from trainers.model.build import architecture_of

    model = _load_best(rep_trial)
    assert architecture_of(model) == REP_ARCH
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "best.pt should hold the training form"


# --------------------------------------------------------------------------- fused vs unfused


def _load_best(trial: Trained) -> nn.Module:
    assert isinstance(trial.result, TrialResult), trial.result
    ckpt = torch.load(trial.result.weights, map_location="cpu", weights_only=False)
    model = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    return model.float().eval()


def _images(data: Path, split: str, imgsz: int) -> torch.Tensor:
    """coco8's ``split`` images letterboxed to ``imgsz`` as Ultralytics does, RGB in [0, 1]."""
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox

    files = sorted(p for p in (data.parent / "images" / split).iterdir() if p.suffix in (".jpg", ".png"))
    assert files
    boxes: list[Any] = [LetterBox((imgsz, imgsz), auto=False)(image=cv2.imread(str(f))) for f in files]
    x = np.stack([b[..., ::-1].transpose(2, 0, 1) for b in boxes]).astype("float32") / 255.0
    return torch.from_numpy(np.ascontiguousarray(x))


def _calibrate_bn_(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Recompute every BatchNorm's running statistics on ``images`` (no weight changes), in place.

    After one epoch the running statistics are still close to their initial mean 0 / var 1, so
    activations shrink with depth and the detector's output does not depend on its input (and
    a broken fuse could look correct). Statistics measured on real images fix both.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def _raise_class_scores_(model: nn.Module, shift: float, classes: int = 3) -> nn.Module:
    """Add ``shift`` to the logit biases of the first ``classes`` classes in both heads, in place.

    After one epoch class scores are near their prior (~1e-5), below the validator's 0.001
    threshold: no detection survives and both mAPs are 0 whatever the fuse does. Raising a
    few classes only keeps the candidates few, so NMS stays far within its time limit (past
    it Ultralytics drops the remaining images' detections).
    """
    head = model.model[-1]  # type: ignore[index]
    with torch.no_grad():
        for attr in ("cv3", "one2one_cv3"):
            for branch in getattr(head, attr, ()):
                branch[-1].bias[:classes] += shift
    return model


@pytest.fixture(scope="module")
def calibrated(rep_trial: Trained, coco8_copy: Path) -> nn.Module:
    """The rep trial's ``best.pt`` with BatchNorm statistics measured on coco8 and class scores raised."""
    images = torch.cat([_images(coco8_copy, "train", EVAL_IMGSZ), _images(coco8_copy, "val", EVAL_IMGSZ)])
    return _raise_class_scores_(_calibrate_bn_(_load_best(rep_trial), images), shift=5.0)


def _pinned(model: nn.Module, head: str) -> nn.Module:
    from trainers.model.heads import pin_head

    return pin_head(copy.deepcopy(model), head)


@pytest.mark.parametrize("head", ["nms", "nms_free"])
@pytest.mark.parametrize("form", ["checkpoint", "calibrated"])
def test_fused_raw_outputs_match_unfused_on_val_images(rep_trial: Trained, calibrated: nn.Module,
                                                       coco8_copy: Path, form: str, head: str) -> None:
    """The pinned head's raw outputs (one-to-many decoded boxes, or one-to-one logits) agree fused and unfused."""
    from trainers.deploy.inference import count_params, fused_copy
    from trainers.model.heads import pin_head

    model = _pinned(_load_best(rep_trial) if form == "checkpoint" else calibrated, head)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fused_copy(model, before_fuse=lambda m: pin_head(m, head))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert count_params(fused) < count_params(model)
    x = _images(coco8_copy, "val", IMGSZ)
    nc = class_count(coco8_copy)
    with torch.no_grad():
        (y_model, raw_model), (y_fused, raw_fused) = model(x), fused(x)
    if head == "nms":
        expected, got = y_model, y_fused
        assert expected.shape == got.shape == (len(x), 4 + nc, 84)  # 8x8 + 4x4 + 2x2 anchors
    else:
        assert y_model.shape == y_fused.shape == (len(x), 84, 6)  # top-k of 84 anchors: box, score, class
        expected, got = (torch.cat([raw["one2one"]["boxes"], raw["one2one"]["scores"]], 1)
                         for raw in (raw_model, raw_fused))
        assert expected.shape == got.shape == (len(x), 4 + nc, 84)  # YOLO26: 4 box distances (no DFL) + class logits
    if form == "calibrated":  # the output depends on the image, so a wrong fuse cannot hide
        assert expected.std(dim=0).max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "fused_copy changed the model"


def _inside(label_line: str, margin: float = 0.01) -> bool:
    """Whether a saved ``cls x y w h conf`` box stays off the image border.

    Saved boxes are clipped to the image but the validator matches unclipped predictions, so
    a box that crossed the border would not match its own label.
    """
    x, y, w, h = (float(v) for v in label_line.split()[1:5])
    return min(x - w / 2, y - h / 2) > margin and max(x + w / 2, y + h / 2) < 1 - margin


def _pseudo_labelled_copy(model: nn.Module, data: Path, dst: Path, keep: int, head: str) -> Path:
    """A copy of ``data`` whose val labels are ``model``'s ``keep`` most confident detections inside the image.

    Predictions come from the validator ``evaluate`` runs (``save_txt`` with confidences), so
    ``model`` scores a high mAP against them; a fused copy must score the same.
    """
    from ultralytics.models.yolo.detect import DetectionValidator

    from trainers.model.heads import ultralytics_nms_arg

    shutil.copytree(data.parent, dst)
    save = dst.parent / "pseudo_val"
    args = {"data": str(dst / data.name), "imgsz": EVAL_IMGSZ, "batch": 16, "device": "cpu", "plots": False,
            "verbose": False, "save_json": False, "half": False, "workers": 0, "save_txt": True, "save_conf": True,
            "project": str(save.parent), "name": save.name, "exist_ok": True, "nms": ultralytics_nms_arg(head)}
    DetectionValidator(args=args)(model=copy.deepcopy(model))  # its AutoBackend fuses in place
    rows = sorted(((float(line.split()[5]), f.stem, " ".join(line.split()[:5]))
                   for f in (save / "labels").glob("*.txt") for line in f.read_text().splitlines()
                   if _inside(line)), reverse=True)
    assert len(rows) > keep
    labels = dst / "labels" / "val"
    for f in labels.glob("*.txt"):
        f.write_text("")
    for _, stem, line in rows[:keep]:
        with open(labels / f"{stem}.txt", "a") as fh:
            fh.write(line + "\n")
    for cache in (dst / "labels").glob("*.cache"):
        cache.unlink()
    return dst / data.name


@pytest.mark.parametrize("head", ["nms_free", "nms"])
def test_fused_and_unfused_give_the_same_map(calibrated: nn.Module, coco8_copy: Path, tmp_path: Path,
                                             head: str) -> None:
    """mAP50-95 of the trained rep model vs its fused copy, for the pinned head, within 1e-3, on two label sets.

    After one epoch at 64 px coco8's own mAP is ~0, which would let a broken fuse pass; so the
    val images are also labelled with the model's own 12 most confident detections, against
    which the unfused model scores a high mAP that a fused copy only matches with the same
    boxes, scores and classes. A copy with one slightly wrong kernel scores visibly lower.
    """
    from trainers.deploy.inference import fused_copy
    from trainers.model.heads import pin_head
    from trainers.train.evaluate import evaluate

    trained = _pinned(calibrated, head)
    fused = fused_copy(trained, before_fuse=lambda m: pin_head(m, head))
    pseudo = _pseudo_labelled_copy(trained, coco8_copy, tmp_path / "pseudo" / "coco8", keep=12, head=head)
    scores = {}
    for name, data in (("coco8", coco8_copy), ("pseudo", pseudo)):
        a = evaluate(trained, str(data), EVAL_IMGSZ, device="cpu", save_dir=tmp_path / name / "unfused", head=head)
        b = evaluate(fused, str(data), EVAL_IMGSZ, device="cpu", save_dir=tmp_path / name / "fused", head=head)
        assert all(0.0 <= v <= 1.0 for v in (*a.values(), *b.values()))
        assert b["map50_95"] == pytest.approx(a["map50_95"], abs=1e-3), name
        assert b["map50"] == pytest.approx(a["map50"], abs=1e-3), name
        scores[name] = a
    assert scores["pseudo"]["map50_95"] > 0.3, scores  # non-trivial, so the comparison can fail
    broken = copy.deepcopy(fused)  # a fuse that got one rep block's kernel slightly wrong
    conv = next(m for m in broken.model[4].modules() if isinstance(m, nn.Conv2d))  # type: ignore[index]
    noise = torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv.weight.add_(0.1 * conv.weight.std() * noise)
    c = evaluate(broken, str(pseudo), EVAL_IMGSZ, device="cpu", save_dir=tmp_path / "pseudo" / "broken", head=head)
    assert c["map50_95"] < scores["pseudo"]["map50_95"] - 0.1, (scores, c)
