"""``python -m search.latency_model`` on saved measurements (``--samples``): refit and revalidate without measuring."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from search.latency_model import main
from search.predict.fit import Measured, graphs_of, sample_architectures
from search.predict.samples import load_samples, samples_path, save_samples
from search.predict.store import model_path, validation_path
from search.space import SearchSpace
from trainers.latency.predictor import CostModel, TargetConditions

REPO = Path(__file__).resolve().parents[2]
SPACE = REPO / "spaces" / "yolo26.yaml"
TRUE_WEIGHTS = {"conv_dense_k3_macs": 2e-3, "conv_pw_k1_macs": 1e-3, "concat_calls": 4e-3, "elementwise_elems": 5e-3}


def _true_ratio(graph: object) -> float:
    values = graph.as_dict()  # type: ignore[attr-defined]
    return 0.3 + sum(w * values.get(f, 0.0) for f, w in TRUE_WEIGHTS.items())


def test_fit_and_validate_on_saved_samples_recompute_features_and_keep_the_measurements(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = SearchSpace.load(SPACE)
    setting = replace(space.spec.latency, imgsz=64)
    conditions = TargetConditions.here(setting)
    archs = sample_architectures(space, 28, seed=0)
    fit_file = save_samples(tmp_path / "fit.json", Measured(tuple(archs), (), tuple(
        _true_ratio(g) for g in graphs_of(archs, setting)), 40.0), conditions)
    common = ["--space", str(SPACE), "--imgsz", "64", "--studies-dir", str(tmp_path / "studies")]

    assert main(["fit", *common, "--samples", str(fit_file)]) == 0
    path = model_path(tmp_path / "studies", setting)
    model = CostModel.load(path)
    assert model.stock_ms == 40.0 and model.stats["samples"] == str(fit_file)
    assert model.stats["fit"]["mape_pct"] < 1e-3  # the features were recomputed in the samples' order
    kept = load_samples(samples_path(path, "fit"), conditions)
    assert kept.archs == tuple(archs) and kept.ratios == pytest.approx([_true_ratio(g) for g in graphs_of(
        archs, setting)])

    held = sample_architectures(space, 6, seed=1000, exclude=frozenset(a.hash for a in archs), with_corners=False)
    truth = [_true_ratio(g) for g in graphs_of(held, setting)]
    val_file = save_samples(tmp_path / "val.json", Measured(tuple(held), (), tuple(truth), 40.0), conditions,
                            again=[r * 1.1 for r in truth[:3]])
    assert main(["validate", *common, "--samples", str(val_file)]) == 0
    rows = json.loads(validation_path(path).read_text())["rows"]
    assert rows["predictor"]["n"] == 6 and rows["predictor"]["mape_pct"] < 1e-3
    assert rows["noise floor"]["n"] == 3 and rows["noise floor"]["mape_pct"] == pytest.approx(10.0)
    assert load_samples(samples_path(path, "validation"), conditions).again == pytest.approx(
        [r * 1.1 for r in truth[:3]])

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # measured at 64 px, asked at 96 px
        main(["fit", *common[:2], "--imgsz", "96", "--studies-dir", str(tmp_path / "studies"),
              "--samples", str(fit_file)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "imgsz" in err and "another target" in err
    with pytest.raises(SystemExit) as e:  # the fit's own architectures are not held out
        main(["validate", *common, "--samples", str(fit_file)])
    assert e.value.code == 2 and "not held out" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["[]", '{"version": 1}', '{"version": 1, "conditions": {}, "archs": [1]}', "{"])
def test_a_malformed_samples_file_is_one_value_error(tmp_path: Path, text: str) -> None:
    space = SearchSpace.load(SPACE)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="cannot be read"):
        load_samples(path, TargetConditions.here(space.spec.latency))
