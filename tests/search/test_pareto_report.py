"""The Pareto report as people read it: the header of pareto.txt/json, the plot, a missing plotting library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from search.pareto import baseline_trial, pareto_front, write_report
from search.pareto.header import report_header
from search.pareto.plot import plot_data, write_plots
from search.space import Constraint
from search.study.config import RunConfig
from search.study.records import record_attrs
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture, StageChoice
from trainers.train.results import TrialSettings

TARGET = "torch/cpu-x86_64-2-cores/float32/640/t1/nms_free"
CONDITIONS = "torch eager fused, cpu (x86_64, 2 cores), float32, batch 1, 640 px, 1 thread, head nms_free"


def _report(median: float) -> LatencyReport:
    return LatencyReport(median_ms=median, p90_ms=median * 1.05, mean_ms=median, cv=0.02, n=60, mode="eager",
                         device="cpu (x86_64, 2 cores)", dtype="float32", batch=1, imgsz=640, threads=1,
                         torch="2.14.1", fused=True, head="nms_free", ci_low_ms=median - 1, ci_high_ms=median + 1)


def _trial(m: float, lat: float, h: str, params_m: float = 2.5, baseline: bool = False) -> optuna.trial.FrozenTrial:
    records = {"metrics": {"map50_95": m, "latency_ms": lat, "params_m": params_m},
               "latency": {**_report(lat).to_dict(), "cached": False}}
    return create_trial(state=TrialState.COMPLETE, values=[m, lat], params={h: h},
                        distributions={h: CategoricalDistribution([h])}, system_attrs=record_attrs(records),
                        user_attrs={"hash": h, "blocks": f"{h}/C3k2", "baseline": baseline})


@pytest.fixture
def cfg(tmp_path: Path) -> RunConfig:
    """A study of four architectures: the baseline (0), a better one (1), a slow one (2), one over params_m <= 4 (3)."""
    url = f"sqlite:///{tmp_path / 'rep.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="rep", storage=url, directions=["maximize", "minimize"])
    study.add_trials([_trial(0.40, 95.0, "base", baseline=True), _trial(0.45, 80.0, "good"),
                      _trial(0.60, 150.0, "slow"), _trial(0.90, 50.0, "big", params_m=9.0)])
    return RunConfig(study="rep", storage=url, root=str(tmp_path), space_file="",
                     constraints=(Constraint("params_m", "<=", 4.0),),
                     trial=TrialSettings(data="/data/shapes.yaml", out=str(tmp_path / "rep"), epochs=12, imgsz=128))


def _study(cfg: RunConfig) -> optuna.Study:
    return optuna.load_study(study_name=cfg.study, storage=cfg.storage)


def test_pareto_txt_and_json_start_with_study_data_head_and_latency_target(cfg: RunConfig) -> None:
    summary = write_report(_study(cfg), cfg)
    text = (cfg.folder / "pareto.txt").read_text().splitlines()
    assert text[0].startswith("Pareto front (2 points")
    assert text[1:8] == ["study:       rep",
                         "data:        /data/shapes.yaml (trained 12 epochs at 128 px)",
                         "head:        nms_free",
                         "mAP:         each trial trained stand-alone (12 epochs at 128 px)",
                         f"latency:     target {TARGET}",
                         f"             {CONDITIONS}",
                         "             each trial's own figure, measured when it ran"]
    assert "constraints: params_m <= 4" in text[8] and text[9].startswith("baseline:    trial 0")
    table = text[text.index("") + 1:]
    assert table[0].split()[:2] == ["trial", "hash"] and [row.split()[0] for row in table[2:4]] == ["1", "2"]
    assert any(line.startswith("Hypervolume ") for line in table)
    header = json.loads((cfg.folder / "pareto.json").read_text())["header"]
    assert header == summary["header"]
    assert (header["study"], header["data"], header["head"]) == ("rep", "/data/shapes.yaml", "nms_free")
    assert header["latency_target"] == TARGET and header["latency_conditions"] == CONDITIONS
    assert header["train"] == "12 epochs at 128 px" and header["baseline_trial"] == 0


def test_the_header_says_when_an_interleaved_remeasure_ranks_the_front(cfg: RunConfig) -> None:
    study = _study(cfg)
    again = {0: _report(90.0), 1: _report(85.0)}
    front = pareto_front(study, cfg.objectives, cfg.constraints, again)
    header = report_header("rep", cfg, front, baseline_trial(study), again)
    assert header.latency_source.startswith("re-measured together (interleaved) at the end of the search for "
                                            "trials [0, 1]")
    write_report(study, cfg, again)
    assert "re-measured together (interleaved)" in (cfg.folder / "pareto.txt").read_text()


def test_the_plot_labels_every_architecture_marks_the_baseline_and_titles_its_axes(cfg: RunConfig) -> None:
    study = _study(cfg)
    front = pareto_front(study, cfg.objectives, cfg.constraints)
    header = report_header("rep", cfg, front, baseline_trial(study))
    data = plot_data(study, cfg.objectives, cfg.constraints, front, header)
    assert data is not None
    by_number = {p.number: p for p in data.points}
    assert set(by_number) == {0, 1, 2, 3}
    assert by_number[0].baseline and not by_number[0].on_front  # "good" dominates the stock model
    assert [p.number for p in data.front] == [1, 2] and data.x_minimized
    assert not by_number[3].feasible and not by_number[3].on_front
    assert (by_number[1].x, by_number[1].y, by_number[1].x_interval) == (80.0, 0.45, (79.0, 81.0))
    assert data.x_title.startswith("latency, ms (median)") and CONDITIONS in data.x_title
    assert data.y_title == "mAP50-95 on the val set of shapes.yaml\n12 epochs at 128 px, head nms_free"
    assert data.title == "Study 'rep': 2 of 4 architectures on the Pareto front"
    written = write_plots(data, cfg.folder)
    assert written == [str(cfg.folder / "pareto.png"), str(cfg.folder / "pareto.html")]
    assert (cfg.folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Study 'rep'" in (cfg.folder / "pareto.html").read_text()


def test_table_plot_and_hover_show_width_and_depth_and_an_older_trial_its_blocks_attr(cfg: RunConfig) -> None:
    from search.pareto import blocks_label, format_table, front_rows

    arch = Architecture.create({"p3_backbone": StageChoice(block="RepViT", width=0.75, depth=2)})
    narrow = _trial(0.50, 70.0, "narrow")  # on the front: more accurate and faster than every feasible trial
    narrow.system_attrs.update(record_attrs({"architecture": arch.to_dict()}))
    narrow.user_attrs["blocks"] = "C3k2/RepViT/C3k2"  # what a trial wrote before widths and depths were shown
    study = _study(cfg)
    study.add_trial(narrow)
    label = "C3k2/RepViT x0.75 d2/C3k2/C3k2/C3k2/C3k2/C3k2/C3k2"
    old = study.trials[1]  # no architecture record: its blocks attr is shown as it was written
    assert blocks_label(study.trials[4]) == label and blocks_label(old) == "good/C3k2"
    front = pareto_front(study, cfg.objectives, cfg.constraints)
    rows = front_rows(front, baseline_trial(study))
    assert [(r["trial"], r["blocks"]) for r in rows] == [(4, label), (2, "slow/C3k2")]
    assert any(line.endswith(label) for line in format_table(rows).splitlines())
    data = plot_data(study, cfg.objectives, cfg.constraints, front, report_header("rep", cfg, front, old))
    assert data is not None and {p.number: p.blocks for p in data.points}[4] == label
    write_plots(data, cfg.folder)
    assert f"trial 4: {label}".replace("/", "\\u002f") in (cfg.folder / "pareto.html").read_text()  # plotly's JSON


@pytest.mark.parametrize(("module", "missing", "kept"), [("matplotlib", "pareto.png", "pareto.html"),
                                                          ("plotly", "pareto.html", "pareto.png")])
def test_a_missing_plotting_library_prints_one_warning_line(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], module: str,
                                                            missing: str, kept: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    summary = write_report(_study(cfg), cfg)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {module} is not installed: {missing} not drawn (pip install {module})"]
    assert not (cfg.folder / missing).exists() and (cfg.folder / kept).is_file()
    assert summary["plots"] == [str(cfg.folder / kept)]
    assert (cfg.folder / "pareto.txt").is_file() and (cfg.folder / "pareto.json").is_file()


def test_the_report_shows_the_seed_spread_and_who_beats_stock(cfg: RunConfig) -> None:
    study = _study(cfg)
    study.set_user_attr("map_seed_spread", {"map50_95": 0.03, "epochs": 12})
    summary = write_report(study, cfg)
    good = next(r for r in summary["front"] if r["hash"] == "good")  # +5 points, faster beyond noise
    assert good["map_spread"] == 0.03 and good["beats_stock"] is True
    text = (Path(cfg.folder) / "pareto.txt").read_text()
    assert "0.4500+-0.0300" in text and f"trials [{good['trial']}]" in text
    assert json.loads((Path(cfg.folder) / "pareto.json").read_text())["front"][0]["map_spread"] == 0.03



def test_supernet_estimates_are_labelled_and_the_retrained_ranked_on_stand_alone_map(cfg: RunConfig) -> None:
    from dataclasses import replace

    from search.space import OneShotSettings

    cfg = replace(cfg, mode="oneshot", oneshot=OneShotSettings(supernet_epochs=5, subnets=4, calib_images=32,
                                                                retrain_top=1))
    study = optuna.create_study(study_name="one", storage=cfg.storage, directions=["maximize", "minimize"])
    trials = [_trial(0.40, 95.0, "base", baseline=True), _trial(0.45, 80.0, "good"), _trial(0.60, 150.0, "slow")]
    for t in trials:
        t.user_attrs["source"] = "supernet"
    study.add_trials(trials)
    cfg = replace(cfg, study="one")
    alone = {0: 0.30, 2: 0.35, 1: 0.38}  # stand-alone, the supernet's order (slow > good) reversed
    for n, m in alone.items():
        study.set_user_attr(f"retrained:{n}", {"map50_95": m, "epochs": 12, "imgsz": 128})
    study.set_user_attr("retrained:2:plain", {"map50_95": 0.9, "epochs": 12, "imgsz": 128})  # a variant: not read
    summary = write_report(study, cfg)
    text = (cfg.folder / "pareto.txt").read_text()
    assert ("mAP:         supernet estimate (recalibrated BN) for trials with source: supernet: the path's shared "
            "weights of a SPOS supernet trained 5 epochs at 128 px, BatchNorm recalibrated on 32 images") in text
    table = text.splitlines()[text.splitlines().index("") + 1:]
    assert table[0].split()[:4] == ["trial", "hash", "mAP50-95", "alone"]
    assert table[2].split()[:4] == ["1", "good", "0.4500", "0.3800"]
    assert "mAP50-95 of every row: supernet estimate (recalibrated BN; user attr source: supernet)" in text
    ranking = text[text.index("Retrained stand-alone (12 epochs at 128 px"):].splitlines()
    assert [line.split()[1] for line in ranking[3:6]] == ["1", "2", "0*"]  # ranked on stand-alone mAP
    assert ranking[3].split()[3:6] == ["0.3800", "0.4500e", "+8.00"]
    assert [r["on_front"] for r in summary["retrained"]] == [True, False, False]  # alone, 1 beats both
    front = pareto_front(study, cfg.objectives, cfg.constraints)
    header = report_header("one", cfg, front, baseline_trial(study))
    data = plot_data(study, cfg.objectives, cfg.constraints, front, header, alone=alone)
    assert data is not None and data.y_title.startswith("mAP50-95: supernet estimate (recalibrated BN) on the val")
    assert {p.number: p.alone for p in data.points} == alone
    write_plots(data, cfg.folder)
    assert "retrained stand-alone (same architecture)" in (cfg.folder / "pareto.html").read_text()


def test_a_study_without_retrains_has_no_alone_column_or_ranking(cfg: RunConfig) -> None:
    summary = write_report(_study(cfg), cfg)
    text = (cfg.folder / "pareto.txt").read_text()
    table_head = text.splitlines()[text.splitlines().index("") + 1]
    assert "alone" not in table_head and "supernet estimate" not in text and "Retrained stand-alone" not in text
    assert summary["retrained"] == []


INT8_TARGET = "openvino/cpu-x86_64-2-cores/int8/640/t1/nms_free"
QUANTIZER = "ultralytics-8.4.190+nncf-3.4.0"


def _int8_trial(m: float, m_int8: float, lat: float, h: str, baseline: bool = False) -> optuna.trial.FrozenTrial:
    """A trial of an INT8 study: float and INT8 mAP, the drop of its exports, an INT8 latency report."""
    t = _trial(m, lat, h, baseline=baseline)
    drop = round(100 * (m - m_int8), 4)
    report = {**_report(lat).to_dict(), "dtype": "int8", "backend": "openvino", "mode": "session", "cached": False}
    int8 = {"backend": "openvino", "quantizer": QUANTIZER, "calib_images": 8, "imgsz": 128, "map50_95_float": m,
            "map50_95_int8": m_int8, "float_path": "f", "int8_path": "i", "int8_drop": drop}
    t.system_attrs.update(record_attrs({"metrics": {"map50_95": m, "map50_95_int8": m_int8, "int8_drop": drop,
                                                    "latency_ms": lat, "params_m": 2.5},
                                        "latency": report, "int8": int8}))
    t.values = [m_int8, lat]
    return t


def test_an_int8_study_reports_both_maps_the_drop_and_says_int8(cfg: RunConfig) -> None:
    from dataclasses import replace

    from trainers.latency.setting import LatencySetting

    objectives = (("map50_95_int8", "maximize"), ("latency_ms", "minimize"))
    cfg = replace(cfg, study="q", objectives=objectives, constraints=(),
                  trial=replace(cfg.trial, latency=LatencySetting(backend="openvino", dtype="int8", calib_images=8)))
    study = optuna.create_study(study_name="q", storage=cfg.storage, directions=["maximize", "minimize"])
    # float ranks "fp" first, INT8 ranks "q8" first: the INT8 front is {q8}, the float one would be {fp}
    study.add_trials([_int8_trial(0.40, 0.38, 95.0, "base", baseline=True), _int8_trial(0.50, 0.30, 90.0, "fp"),
                      _int8_trial(0.45, 0.44, 90.0, "q8")])
    summary = write_report(study, cfg)
    text = (cfg.folder / "pareto.txt").read_text()
    lines = text.splitlines()
    assert f"latency:     target {INT8_TARGET}" in lines and any(", int8, batch 1" in line for line in lines)
    assert (f"INT8:        post-training quantized by {QUANTIZER} for openvino on 8 training images; INT8 "
            "mAP50-95 of that export at 128 px, drop = float export minus INT8 export (points)") in lines
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["trial", "hash", "mAP50-95", "INT8", "drop", "pt", "lat", "ms", "lat", "95%", "CI",
                                "params", "M", "dINT8", "pt", "lat", "x", "blocks"]
    assert table[2].split()[:5] == ["2", "q8", "0.4500", "0.4400", "+1.00"] and len(summary["front"]) == 1
    assert "+6.00" in table[2].split()  # dINT8: 0.44 against stock's INT8 0.38, not the float 0.45 - 0.40
    assert any(line.startswith("mAP50-95: the trained float model; INT8: its post-training quantized")
               for line in lines)
    row = summary["front"][0]
    assert (row["map50_95"], row["map50_95_int8"], row["int8_drop"], row["map_metric"]) == (0.45, 0.44, 1.0,
                                                                                          "map50_95_int8")
    assert summary["header"]["int8"].startswith("post-training quantized by ") and summary["hypervolume"][
        "map_metric"] == "map50_95_int8"
    assert "reference: INT8 mAP50-95 0," in text
    front = pareto_front(study, cfg.objectives)
    header = report_header("q", cfg, front, baseline_trial(study))
    data = plot_data(study, cfg.objectives, cfg.constraints, front, header)
    assert data is not None and data.y_title.startswith("mAP50-95 of the INT8 model (post-training quantized) on")
    assert "int8" in data.x_title and {p.y for p in data.points} == {0.38, 0.30, 0.44}
    float_axis = plot_data(study, (("map50_95", "maximize"), ("latency_ms", "minimize")), (), front, header)
    assert float_axis is not None and float_axis.y_title.startswith("mAP50-95 of the float model (not quantized) on")


def test_a_float_study_has_no_int8_columns_or_line(cfg: RunConfig) -> None:
    write_report(_study(cfg), cfg)
    text = (cfg.folder / "pareto.txt").read_text()
    assert "INT8" not in text and "drop pt" not in text and "dmAP pt" in text
