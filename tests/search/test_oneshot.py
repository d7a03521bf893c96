"""``search.run --mode oneshot`` end to end on a tiny space: supernet, scored subnets, errors, the ablation helper."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from search_helpers import TINY_SPACE, cli, load, run_search

# elastic p3: the supernet is built at width 1.0 and depth 2, so stock (depth 1) is a shallower path
ELASTIC_SPACE = TINY_SPACE.replace("    kernels: [[3], [3, 5]]\n", "    kernels: [[3], [3, 5]]\n    width: [0.5, 1.0]\n"
                                   "    depth: [1, 2]\n")


def test_oneshot_run_scores_subnets_on_the_supernet_and_retrains_its_front(tmp_path: Path, data: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("--mode", "oneshot", "--supernet-epochs", "1", "--subnets", "3", "--retrain-top", "1", "--data", str(data),
            "--imgsz", "64")
    r = run_search(tmp_path, ELASTIC_SPACE, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "supernet epoch 1/1" in r.stderr and "supernet ready" in r.stderr
    assert "paths, elastic in width and depth, 1 epochs" in r.stderr
    url = f"sqlite:///{tmp_path / 'studies' / 'space.db'}"
    assert (f"To check, on this data: python -m search.audit --storage {url} --study space --top 3 --random 3 "
            "--epochs 2 --seeds 0") in r.stdout
    last = tmp_path / "studies" / "space" / "supernet" / "weights" / "last.pt"
    from trainers.train.supernet_trainer import supernet_spec_of

    held = supernet_spec_of(last).stage("p3_backbone")
    assert (held.width, held.depth, held.widths, held.depths) == (1.0, 2, (0.5, 1.0), (None, 2))
    study = load(tmp_path, "space")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs.get("is_baseline")
    for t in trials:
        assert t.user_attrs["source"] == "supernet" and t.user_attrs["recalibrated"] is True
        assert math.isfinite(t.user_attrs["map50_95"]) and math.isfinite(t.values[1]) and t.values[1] > 0
        assert t.user_attrs["hash"] and t.user_attrs["params"] > 0
    assert study.trials[0].params["p3_backbone.depth"] == 1  # stock, scored on the first block of the depth-2 stage
    retrained = _front_retrained(tmp_path, study, r.stdout)
    again = run_search(tmp_path, ELASTIC_SPACE, *args)  # resumes: supernet and retrains found, nothing trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "supernet epoch" not in again.stderr and len(load(tmp_path, "space").get_trials()) == 3
    assert again.stderr.count("was retrained before at this schedule") == len(retrained), again.stderr[-3000:]
    assert "Retrained stand-alone" in again.stdout
    skip = run_search(tmp_path, ELASTIC_SPACE, *args[:-6], "--retrain-top", "0", *args[-4:])
    assert skip.returncode == 0 and "--retrain-top 0: no architecture retrained" in skip.stdout, skip.stderr[-2000:]
    assert "retraining" not in skip.stderr and "Retrained stand-alone" not in skip.stdout
    _ablation_runs(tmp_path, data)
    _audit_ranks_supernet_estimates(tmp_path, monkeypatch)


def _front_retrained(tmp_path: Path, study: optuna.Study, stdout: str) -> list[int]:
    """Stock and one front architecture were retrained stand-alone at the run's schedule, recorded and reported."""
    report = json.loads((tmp_path / "studies" / "space" / "pareto.json").read_text())
    records = {int(k.split(":")[1]): v for k, v in study.user_attrs.items() if k.count(":") == 1
               and k.startswith("retrained:")}
    front = [r["trial"] for r in report["front"] if r["trial"] != 0]  # ranked on the interleaved latency
    assert 0 in records and len(records) == 1 + min(1, len(front)), records
    for n, record in records.items():
        assert (record["epochs"], record["imgsz"]) == (1, 64) and math.isfinite(record["map50_95"])
        assert Path(record["path"]).is_file() and f"trial_{n:04d}_" in record["path"] and "/retrain/" in record["path"]
        assert study.user_attrs[f"retrained:{n}:plain"] == record
    assert set(records) - {0} <= set(front)
    if not front:
        assert "the supernet front holds 0 architecture(s) besides stock; retraining stock only" in stdout
    ranking = stdout[stdout.index("Retrained stand-alone (1 epochs at 64 px"):]
    best = max(records, key=lambda n: records[n]["map50_95"])
    assert ranking.splitlines()[3].split()[1].rstrip("*") == str(best)  # ranked on stand-alone mAP
    text = (tmp_path / "studies" / "space" / "pareto.txt").read_text()
    assert "mAP:         supernet estimate (recalibrated BN) for trials with source: supernet" in text
    assert "mAP50-95 of every row: supernet estimate" in text and "Retrained stand-alone" in text
    assert {r["trial"]: r["map50_95_alone"] for r in report["retrained"]} == {
        n: v["map50_95"] for n, v in records.items()}
    assert all(r["source"] == "supernet" for r in report["front"])
    return sorted(records)


def _audit_ranks_supernet_estimates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``search.audit`` on a one-shot study ranks the supernet estimates against stand-alone trainings; its seed
    spread is over stand-alone seeds only, and it records no ``map_seed_spread`` (the table's mAPs are estimates)."""
    import search.audit
    from search.pareto.report import SPREAD_ATTR, map_seed_spread
    from search.study.config import RunConfig

    url = f"sqlite:///{tmp_path / 'studies' / 'space.db'}"
    a = cli("search.audit", "--storage", url, "--study", "space", "--top", "1", "--random", "1", "--epochs", "1",
            "--seeds", "0", cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-3000:]
    study = load(tmp_path, "space")
    record = study.user_attrs["audit"]
    assert record["search_source"] == "supernet" and len(record["rows"]) == 2
    estimates = {t.number: t.user_attrs["map50_95"] for t in study.get_trials()}
    for row in record["rows"]:
        assert row["source"] == "supernet" and row["search_map"] == estimates[row["trial"]] and row["seed_maps"] == []
        assert math.isfinite(row["audit_map"])
    assert "supernet" in a.stdout.splitlines()[0] and "(supernet estimate vs audit 1 epochs stand-alone)" in a.stdout
    assert SPREAD_ATTR not in study.user_attrs
    # with seeds: the spread is that of the stand-alone seeds (scripted here), never of the estimate beside them
    stand_alone = iter([0.5, 0.2, 0.4, 0.6, 0.3, 0.35])
    monkeypatch.setattr(search.audit, "_train", lambda *_: next(stand_alone))
    cfg = RunConfig.from_study(study)
    trials = [t for t in study.get_trials() if t.number in {r["trial"] for r in record["rows"]}]
    seeded = search.audit.audit(study, cfg, trials, 1, None, None, 2)
    rows = seeded["rows"]
    assert [r["audit_map"] for r in rows] == [0.5, 0.6] and [r["seed_maps"] for r in rows] == [[0.2, 0.4], [0.3, 0.35]]
    assert [r["seed_spread"] for r in rows] == pytest.approx([0.2, 0.05]) and seeded["map_noise"] is not None
    search.audit.record_audit(study, seeded, 64)  # as the CLI stores it: the report's +- spread stays unset
    assert study.user_attrs["audit"]["map_noise"] == seeded["map_noise"]
    assert SPREAD_ATTR not in study.user_attrs and map_seed_spread(study) is None


def _ablation_runs(tmp_path: Path, data: Path) -> None:
    """The ablation helper scores a subnet of the run's supernet with and without recalibration."""
    from search.engine.oneshot import load_supernet, recalibration_ablation
    from search.study.config import RunConfig

    study = load(tmp_path, "space")
    cfg = RunConfig.from_study(study)
    supernet = load_supernet(tmp_path / "studies" / "space" / "supernet" / "weights" / "last.pt")
    from trainers.model.architecture import Architecture

    result = recalibration_ablation(supernet, Architecture.baseline(), cfg, 4)
    assert set(result) == {"with", "without"}
    assert all(math.isfinite(result[k]["map50_95"]) for k in result)


def test_oneshot_errors_are_one_line(tmp_path: Path) -> None:
    for args, text in ((("--mode", "oneshot", "--subnets", "0"), "--subnets"),
                       (("--mode", "oneshot", "--backend", "ray"), "--backend ray")):
        r = run_search(tmp_path, TINY_SPACE, *args)
        assert r.returncode == 2, r.stderr
        assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "studies" / "space.db").exists()


def test_the_space_oneshot_section_is_checked(tmp_path: Path) -> None:
    r = run_search(tmp_path, TINY_SPACE + "oneshot: {subnets: 0}\n", "--mode", "oneshot")
    assert r.returncode == 2 and "oneshot.subnets: must be an integer in [1, 100000], got 0" in r.stderr, r.stderr


def test_export_of_a_supernet_trial_never_retrained_says_retrain_first(tmp_path: Path) -> None:
    from search.export import weights_of
    from search.pick import Picked, PickError
    from trainers.model.architecture import Architecture

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.3, 5.0], user_attrs={"source": "supernet"}))
    chosen = Picked(Architecture.baseline(), study.trials[0], study, "trial 0")
    with pytest.raises(PickError, match=r"trial 0 has no trained weights \(source: supernet\): retrain it first"):
        weights_of(chosen, None)
    assert weights_of(chosen, "given.pt") == Path("given.pt")


def _scored_study(tmp_path: Path, name: str) -> Any:
    """A study holding one architecture scored on a supernet (as a one-shot run records it), and its run config."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from search.study.config import RunConfig
    from trainers.train.results import TrialSettings

    cfg = RunConfig(study=name, storage=f"sqlite:///{tmp_path / 'studies' / f'{name}.db'}",
                    root=str(tmp_path / "studies"), space_file="space.yaml", trial=TrialSettings(data="", out=""))
    (tmp_path / "studies").mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=cfg.storage, directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.1, 5.0], params={"a": 0},
                                 distributions={"a": CategoricalDistribution([0])}, user_attrs={"source": "supernet"}))
    return cfg


def test_the_study_supernet_is_refused_when_missing_unreadable_or_of_another_space(tmp_path: Path) -> None:
    import torch

    from search.engine.oneshot import supernet_of_study
    from search.space.schema import parse_space
    from search.space.supernet import supernet_spec
    from tests.trainers.test_supernet_trainer import SPEC
    from trainers.model.supernet import build_supernet
    from trainers.model.supernet_spec import SupernetSpec

    cfg = _scored_study(tmp_path, "scored")
    folder = tmp_path / "studies" / "scored" / "supernet"
    with pytest.raises(ValueError, match=r"study 'scored' holds 1 architecture\(s\) scored on its supernet, but its "
                                         r"checkpoint .*last.pt is missing: restore it, or give another --study"):
        supernet_of_study(cfg, SPEC)
    fresh = replace(cfg, study="fresh")  # no such study yet: the supernet is trained there
    assert supernet_of_study(fresh, SPEC) == tmp_path / "studies" / "fresh" / "supernet"
    last = folder / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt: not a readable supernet checkpoint .*; remove .* to train it again"):
        supernet_of_study(cfg, SPEC)
    other = supernet_spec(parse_space(yaml.safe_load(TINY_SPACE)))  # no RepBlock, no RepConv head stems
    torch.save({"model": build_supernet(other, nc=3)}, last)
    assert supernet_of_study(cfg, other) == folder  # its own space: found, resumed there
    with pytest.raises(ValueError, match=r"this study's supernet was trained for another space or shape than "
                                         r"space.yaml \(or before width and depth became elastic\); give another "
                                         r"--study, or remove"):
        supernet_of_study(cfg, SPEC)
    recorded = other.to_dict()  # as recorded before elastic width and depth: no widths, no depths
    recorded["stages"] = {n: {k: v for k, v in st.items() if k not in ("widths", "depths")}
                          for n, st in recorded["stages"].items()}
    old = SupernetSpec.from_dict(recorded)
    elastic = supernet_spec(parse_space(yaml.safe_load(ELASTIC_SPACE)))
    assert old == other and elastic != old  # the old record of TINY_SPACE is its supernet; an elastic one is not


def test_a_run_on_a_study_whose_supernet_is_missing_stops_in_one_line(tmp_path: Path, data: Path) -> None:
    _scored_study(tmp_path, "space")
    r = run_search(tmp_path, TINY_SPACE, "--mode", "oneshot", "--data", str(data), "--subnets", "3")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "holds 1 architecture(s) scored on its supernet, but its checkpoint" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "studies" / "space" / "supernet").exists()


def test_oneshot_trials_sample_the_widths_and_depths_the_supernet_holds() -> None:
    """Every width and depth of an elastic space; a pinned width reduced to the one the supernet holds."""
    from search.engine.oneshot import supernet_space
    from search.space import SearchSpace
    from search.space.supernet import supernet_spec

    spaces = Path(__file__).resolve().parents[2] / "spaces"
    default = SearchSpace.load(spaces / "yolo26.yaml")
    assert supernet_space(default, supernet_spec(default.spec)).spec == default.spec
    wide = SearchSpace.load(spaces / "yolo26_wide.yaml")  # RepBlock everywhere: width pinned, depth elastic
    held = supernet_space(wide, supernet_spec(wide.spec))
    for (name, st), (_, mine) in zip(wide.spec.stages, held.spec.stages):
        if st.tie is None:
            assert (mine.widths, mine.depths) == ((1.0,), st.depths) and len(st.widths) == 4, name
    assert held.baseline_params()["p3_backbone.depth"] == 1  # stock depth 1: held as the supernet's None
