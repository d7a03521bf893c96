"""Teachers and warm starts in one trial: Ultralytics distillation, weight inheritance, bad checkpoints refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from trial_helpers import IMGSZ, REP_ARCH, run_module

from trainers.model.architecture import Architecture
from trainers.model.build import build_model
from trainers.train.dataset import class_count, class_names
from trainers.train.inherit import inherit_weights, matching_tensors, source_state
from trainers.train.teacher import file_sha256, inspect_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stock_checkpoint(tmp_path_factory: pytest.TempPathFactory, coco8_copy: Path) -> Path:
    """A stock YOLO26n trained here for one epoch (no download): the teacher and initialisation source."""
    import os

    from trainers.train.trainer import ArchitectureTrainer

    os.environ["YOLO_OFFLINE"] = "1"
    tmp = tmp_path_factory.mktemp("teacher")
    trainer = ArchitectureTrainer(overrides={
        "model": "yolo26n.yaml", "data": str(coco8_copy), "epochs": 1, "imgsz": IMGSZ, "batch": 4, "device": "cpu",
        "project": str(tmp), "name": "stock", "exist_ok": True, "pretrained": False, "plots": False, "workers": 0,
        "amp": False, "verbose": False, "nms": False, "seed": 0}, architecture=Architecture.baseline())
    trainer.train()
    return Path(trainer.best)


def _arch_file(tmp: Path) -> Path:
    path = tmp / "arch.json"
    path.write_text(REP_ARCH.to_json())
    return path


def test_inheritance_copies_exactly_the_tensors_that_match_by_name_and_shape(stock_checkpoint: Path,
                                                                              coco8_copy: Path) -> None:
    nc = class_count(coco8_copy)
    source = source_state(str(stock_checkpoint))
    torch.manual_seed(0)
    model = build_model(REP_ARCH, nc=nc)
    names = matching_tensors(model, source)
    got = inherit_weights(model, source)
    params = dict(model.named_parameters())
    want = sum(params[k].numel() for k in names if k in params) / sum(p.numel() for p in params.values())
    assert got.share == pytest.approx(want) and 0.2 < want < 1.0  # the stock stages and head, not the rep stages
    state = model.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in names)
    torch.manual_seed(0)
    fresh = build_model(REP_ARCH, nc=nc).state_dict()  # what the same build starts from
    rep_stage = [k for k in state if k.startswith("model.4.") and k not in names]  # p3_backbone: RepViT
    assert rep_stage and all(k not in source or source[k].shape != state[k].shape for k in rep_stage)
    assert all(torch.equal(state[k], fresh[k]) for k in rep_stage if "num_batches" not in k)
    assert inherit_weights(build_model(Architecture.baseline(), nc=nc), source).share == 1.0


def test_a_trial_distills_from_a_teacher_and_starts_warm(tmp_path: Path, coco8_copy: Path,
                                                         stock_checkpoint: Path) -> None:
    r = run_module("trainers.train.trial", "--arch", str(_arch_file(tmp_path)), "--data", str(coco8_copy),
                   "--epochs", "1", "--imgsz", str(IMGSZ), "--batch", "4", "--device", "cpu", "--latency-imgsz",
                   str(IMGSZ), "--latency-device", "cpu", "--out", str(tmp_path / "run"), "--teacher",
                   str(stock_checkpoint),
                   "--distill-weight", "2.5", "--init-from", str(stock_checkpoint), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ok"]
    sha = file_sha256(stock_checkpoint)
    assert result["teacher"]["sha256"] == sha == result["init_from"]["sha256"]
    assert result["teacher"]["architecture"] == Architecture.baseline().hash
    assert 0 < result["inherited"]["share"] < 1
    ckpt = torch.load(result["weights"], weights_only=False)
    assert ckpt["train_args"]["distill_model"] == str(stock_checkpoint.resolve())  # Ultralytics distilled
    assert ckpt["train_args"]["dis"] == 2.5
    assert type(ckpt["model"]).__name__ == "RepDetectionModel"  # the student alone was saved


def _bad_checkpoints(tmp: Path, stock: Path) -> dict[str, tuple[Path, str]]:
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a checkpoint" * 8)
    ckpt = torch.load(stock, weights_only=False)
    other_nc = tmp / "other_nc.pt"
    nc = int(ckpt["model"].yaml["nc"])
    torch.save({**ckpt, "model": build_model(Architecture.baseline(), nc=nc + 1).half()}, other_nc)
    renamed = tmp / "renamed.pt"
    model = ckpt["model"]
    model.names = {**model.names, 0: "not-a-person"}
    torch.save({**ckpt, "model": model}, renamed)
    return {"missing": (tmp / "nope.pt", "no such file"), "garbage": (garbage, "is not an Ultralytics checkpoint"),
            "nc": (other_nc, f"detects {nc + 1} classes, the data has {nc}"),
            "names": (renamed, "names class 0 'not-a-person'")}


@pytest.mark.parametrize("flag", ["--teacher", "--init-from"])
def test_a_bad_checkpoint_is_one_line_exit_2_before_training(tmp_path: Path, coco8_copy: Path,
                                                             stock_checkpoint: Path, flag: str) -> None:
    bad = _bad_checkpoints(tmp_path, stock_checkpoint)
    nc, names = class_count(coco8_copy), class_names(coco8_copy)
    for case, (path, words) in bad.items():  # every case, in process: the one-line reason
        with pytest.raises(ValueError) as e:
            inspect_checkpoint(path, flag, nc, names)
        assert str(e.value).startswith(flag) and words in str(e.value) and "\n" not in str(e.value), case
    path, words = bad["nc" if flag == "--teacher" else "garbage"]  # and what the command line makes of it
    r = run_module("trainers.train.trial", "--arch", str(_arch_file(tmp_path)), "--data", str(coco8_copy),
                   "--epochs", "1", "--imgsz", str(IMGSZ), "--device", "cpu", "--out", str(tmp_path / "run"),
                   flag, str(path), cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and r.stderr == f"error: {inspect_error(path, flag, nc, names)}\n", r.stderr
    assert words in r.stderr and not (tmp_path / "run").exists()


def inspect_error(path: Path, flag: str, nc: int, names: dict[int, str] | None) -> str:
    try:
        inspect_checkpoint(path, flag, nc, names)
    except ValueError as e:
        return str(e)
    raise AssertionError(f"{path} was accepted")


def test_inspect_names_what_the_checkpoint_is(stock_checkpoint: Path, coco8_copy: Path) -> None:
    info = inspect_checkpoint(stock_checkpoint, "--teacher", nc=class_count(coco8_copy))
    assert info.sha256 == file_sha256(stock_checkpoint) and info.nc == class_count(coco8_copy)
    assert info.blocks == Architecture.baseline().blocks_summary() and info.line().startswith(info.sha256[:12])
