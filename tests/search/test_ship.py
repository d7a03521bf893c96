"""Ship a model: retrain a Pareto trial, export it, verify the exports, reject bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from search_helpers import TinyRun, cli, copy_of, load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, tiny_run: TinyRun) -> Path:
    return copy_of(tiny_run, tmp_path_factory.mktemp("ship"))


def storage(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'studies' / 'tiny.db'}"


def test_retrain_records_retrained_on_the_study(study_dir: Path, data: Path) -> None:
    out = study_dir / "retrained"
    r = cli("search.retrain", "--storage", storage(study_dir), "--study", "tiny", "--pick", "most-accurate",
            "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu",
            "--out", str(out), cwd=study_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ok"] and Path(result["weights"]).is_file()
    assert (out / "result.json").is_file()
    study = load(study_dir, "tiny")
    records = {k: v for k, v in study.user_attrs.items() if k.startswith("retrained:")}
    (key,) = [k for k in records if k.count(":") == 1]  # the latest retrain of the trial: what export ships
    record = records[key]
    assert records == {key: record, f"{key}:plain": record}  # no teacher: also kept as the plain variant
    assert record["epochs"] == 1 and record["path"] == result["weights"] and record["map50_95"] == result["map50_95"]


def test_export_writes_and_verifies_five_files(study_dir: Path) -> None:
    out = study_dir / "export"
    r = cli("search.export", "--storage", storage(study_dir), "--study", "tiny", "--trial", "1", "--imgsz", "64",
            "--out", str(out), cwd=study_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("model.pt", "best.pt", "model.onnx", "model_card.md", "model_card.json"):
        assert (out / name).is_file(), name
    card = json.loads((out / "model_card.json").read_text())
    assert all(c["ok"] for c in card["checks"].values()), card["checks"]
    ort_check = card["checks"]["onnxruntime_vs_torch"]
    assert ort_check["unmatched"] == 0 and ort_check["max_score_diff"] <= 1e-3 and ort_check["matched"] > 0
    assert "PASS" in r.stderr and "one_conv_per_rep_block" in r.stderr
    assert "Overriding model.yaml" not in r.stdout + r.stderr  # the project's own lines only

    payload = torch.load(out / "model.pt", weights_only=True)
    assert set(payload) >= {"architecture", "nc", "names", "state_dict"}
    assert payload["head"] == card["head"] == card["latency"]["head"] == "nms_free"  # the study's pinned head
    assert card["sizes"] == {"train_imgsz": 64, "val_imgsz": 64, "export_imgsz": 64}
    m = card["metrics"]
    assert m["params_fused"] == sum(v.numel() for k, v in payload["state_dict"].items() if "running" not in k
                                    and "num_batches" not in k) < m["params_training_form"]
    whens = [row["when"] for row in card["latency_measurements"]]
    assert whens[0] == "search, trial 1, before training" and whens[-1] == "export (this card)"
    assert all(row["imgsz"] == 64 and row["device"] for row in card["latency_measurements"])
    run_cmd = card["commands"][0]
    for flag in ("--data", "--epochs 1", "--imgsz 64", "--batch 4", "--trials 3", "--device", "--seed 1"):
        assert flag in run_cmd, (flag, run_cmd)
    assert "E " not in " ".join(card["commands"]) and "DIR" not in " ".join(card["commands"])  # no placeholders
    from optuna.artifacts import get_all_artifact_meta

    cards = [m for m in get_all_artifact_meta(load(study_dir, "tiny")) if m.filename.startswith("model_card.")]
    assert sorted(m.filename for m in cards) == ["model_card.json", "model_card.md"]
    # beside the study's file (a copy of the tiny run's), not beside the file its run config was recorded in
    assert all((study_dir / "studies" / "tiny.artifacts" / m.artifact_id).is_file() for m in cards)
    md = (out / "model_card.md").read_text()
    assert "1x3x64x64" in md and "No module named 'blocks'" in md and "onnxruntime only" in md

    from ultralytics.nn.tasks import load_checkpoint

    from trainers import load_exported
    from trainers.deploy.inference import fused_copy
    from trainers.deploy.onnx_io import FirstOutput, match_detections

    trained, _ = load_checkpoint(str(out / "best.pt"), device="cpu")
    fused = fused_copy(trained.float())
    loaded = load_exported(out / "model.pt")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(FirstOutput(loaded)(x), FirstOutput(fused)(x), rtol=1e-4, atol=1e-5)
        want = FirstOutput(fused)(x[:1]).numpy()
    import onnxruntime as ort

    (got,) = ort.InferenceSession(str(out / "model.onnx")).run(None, {"images": x[:1].numpy()})
    assert got.shape == (1, 84, 6)  # the one-to-one head's top-k (84 anchors at 64 px): box, score, class
    assert match_detections(got, want).ok  # near-tied scores of a 1-epoch model may sort differently

    # written by Ultralytics' exporter: its metadata names the classes, the size and the head
    import onnx
    from ultralytics import YOLO

    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert meta["task"] == "detect" and meta["imgsz"] == "[64, 64]" and meta["end2end"] == "True"
    assert YOLO(str(out / "model.onnx"), task="detect").predict(x[:1].numpy().transpose(0, 2, 3, 1)[0] * 255,
                                                                 imgsz=64, verbose=False)[0].names == payload["names"]


def test_corrupted_model_pt_and_unknown_trial_are_one_line_exit_2(study_dir: Path) -> None:
    bad = study_dir / "bad.pt"
    bad.write_bytes(b"\x80\x04garbage" * 10)
    r = cli("trainers.deploy.exported", str(bad), cwd=study_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a model.pt export" in r.stderr
    r = cli("search.export", "--storage", storage(study_dir), "--study", "tiny", "--trial", "1", "--weights",
            str(bad), "--out", str(study_dir / "x"), cwd=study_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "outside the study's run folders" in r.stderr
    from search.study.config import RunConfig

    # the copied study's run folder is the shared tiny run's: the corrupt file lies there only for this call
    inside = RunConfig.from_study(load(study_dir, "tiny")).folder / "corrupt.pt"
    inside.write_bytes(bad.read_bytes())
    try:
        r = cli("search.export", "--storage", storage(study_dir), "--study", "tiny", "--trial", "1", "--weights",
                str(inside), "--out", str(study_dir / "x"), cwd=study_dir)
    finally:
        inside.unlink()
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a readable" in r.stderr
    r = cli("search.export", "--storage", storage(study_dir), "--study", "tiny", "--trial", "99", "--out",
            str(study_dir / "x"), cwd=study_dir)
    assert r.returncode == 2 and "no such trial" in r.stderr and r.stderr.count("\n") == 1
    r = cli("search.retrain", "--storage", storage(study_dir), "--study", "nope", "--pick", "knee", "--data",
            str(bad), "--epochs", "1", "--out", str(study_dir / "y"), cwd=study_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
