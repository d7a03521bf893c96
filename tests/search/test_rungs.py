"""Successive halving (``search.engine.rungs``): non-dominated sorting, the tie-break, the decision, two workers
sharing one SQLite study, the stop path of the trial runner, and validation at the edges.

Real searches with trial processes are in ``test_rungs_search.py``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from search_helpers import run_search

from search.engine.rungs import (
    RungPoint,
    RungWatcher,
    check_rungs,
    crowding_distances,
    decide,
    parse_rungs,
    rung_decision,
    rung_order,
    rung_points,
    schedule_rungs,
)
from search.pareto.dominance import non_dominated_fronts
from search.run import validate
from search.space import SpaceError
from search.space.schema import parse_space
from search.study.config import RunConfig
from search.study.records import read_record, record_attrs, write_record
from trainers.train.results import EpochProgress, TrialSettings

OBJECTIVES = (("map50_95", "maximize"), ("latency_ms", "minimize"))


def pts(*values: tuple[float, float], first: int = 0) -> list[RungPoint]:
    """Points numbered ``first``, ``first + 1``, ... from (mAP, latency) pairs (mAP negated: every value minimized)."""
    return [RungPoint(first + i, (-m, lat)) for i, (m, lat) in enumerate(values)]


def test_non_dominated_fronts_peel_in_order() -> None:
    values = [(1.0, 5.0), (2.0, 2.0), (5.0, 1.0), (3.0, 3.0), (4.0, 4.0), (2.0, 2.0)]
    assert non_dominated_fronts(values) == [[0, 1, 2, 5], [3], [4]]  # equal points do not dominate each other
    assert non_dominated_fronts([]) == []


def test_crowding_distance_ends_are_infinite_inner_points_normalized() -> None:
    front = [(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)]
    d = crowding_distances(front)
    assert d[0] == d[3] == math.inf
    assert d[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4) and d[2] == pytest.approx((4 - 1) / 4 + (2 - 0) / 4)
    assert crowding_distances([(1.0, 1.0), (2.0, 0.0)]) == [math.inf, math.inf]


def test_order_is_front_then_crowding_then_trial_number() -> None:
    # front 1: 0, 1, 2, 3 (1 is in a denser stretch than 2); front 2: 4 and 5 (both ends: number decides)
    points = pts((0.1, 1.0), (0.2, 2.0), (0.25, 2.1), (0.5, 5.0), (0.05, 3.0), (0.04, 2.5))
    order = [(p.number, front) for p, front in rung_order(points)]
    assert order == [(0, 1), (3, 1), (2, 1), (1, 1), (4, 2), (5, 2)]


def test_decide_keeps_the_top_n_over_eta_and_names_who_dominates() -> None:
    points = pts((0.5, 2.0), (0.4, 3.0), (0.1, 9.0), (0.45, 1.0))
    worst = decide(points, 2, eta=2, epoch=3)
    assert (worst.position, worst.of, worst.keep, worst.front, worst.go_on) == (4, 4, 2, 3, False)
    assert worst.dominated_by == (0, 1, 3)
    assert worst.reason(12) == ("rung 3 (epoch 3 of 12): rank 4 of 4, top 2 (1/eta, eta 2) go on; front 3, "
                                "dominated by trials [0, 1, 3]")
    best = decide(points, 3, eta=2, epoch=3)
    assert best.go_on and best.front == 1 and best.dominated_by == ()
    assert best.reason(12).endswith("rank 2 of 4, top 2 (1/eta, eta 2) go on; front 1, dominated by no trial")
    assert not decide(points, 1, eta=2, epoch=3).go_on  # front 2 after 0 and 3
    wide = decide(points, 1, eta=4, epoch=3)  # 4 // 4 = 1, but front 1 holds trials 0 and 3: both go on
    assert wide.keep == 2 and not wide.go_on
    assert decide(points, 3, eta=4, epoch=3).go_on and decide(points, 0, eta=4, epoch=3).go_on
    assert "top 2 (the whole first front; 1/eta, eta 4, keeps 1) go on" in wide.reason(12)


def test_fewer_than_eta_at_a_rung_goes_on_without_waiting() -> None:
    points = pts((0.5, 1.0), (0.1, 9.0))
    d = decide(points, 1, eta=3, epoch=2)
    assert d.go_on and d.dominated_by == (0,) and d.keep == 2
    assert "fewer than eta 3" in d.reason(6)


def test_a_non_dominated_point_goes_on_even_behind_on_crowding_distance() -> None:
    points = pts((0.5, 5.0), (0.1, 1.0), (0.3, 3.0))  # one front; 2 is its middle point, last on crowding
    d = decide(points, 2, eta=3, epoch=1)
    assert (d.position, d.keep, d.front, d.go_on, d.dominated_by) == (3, 3, 1, True, ())
    # a fourth point, dominated by 2: 4 // 3 = 1 would keep trial 0 only; the front keeps 3, and 3 stops
    more = [*points, *pts((0.2, 4.0), first=3)]
    d = decide(more, 3, eta=3, epoch=1)
    assert (d.position, d.keep, d.front, d.go_on, d.dominated_by) == (4, 3, 2, False, (2,))


def frozen(number: int, state: TrialState, curve: list[float], latency: float, **attrs: Any) -> Any:
    t = create_trial(state=state, values=[curve[-1], latency] if state == TrialState.COMPLETE else None,
                     user_attrs={"hash": f"h{number}", **attrs},
                     system_attrs=record_attrs({"epoch_map": curve, "metrics": {"latency_ms": latency}}))
    t.number = number
    return t


def test_rung_points_take_finished_and_running_trials_one_per_architecture() -> None:
    trials = [
        frozen(0, TrialState.COMPLETE, [0.1, 0.2, 0.3], 5.0),
        frozen(1, TrialState.PRUNED, [0.05], 6.0),  # stopped at rung 1: not at rung 2
        frozen(2, TrialState.RUNNING, [0.2, 0.25], 7.0),
        frozen(3, TrialState.FAIL, [0.3, 0.4], 1.0),  # failed: no point
        frozen(4, TrialState.COMPLETE, [0.1, 0.2, 0.3], 5.0, reused_from=0),  # a copy of trial 0
        frozen(5, TrialState.RUNNING, [0.2, 0.3], 8.0, hash="h2"),  # trial 2's architecture again
        frozen(6, TrialState.RUNNING, [0.2, 0.3], math.nan),  # no latency figure: no point
    ]
    at2 = rung_points(trials, OBJECTIVES, 2, number=5)
    assert [(p.number, p.values) for p in at2] == [(5, (-0.3, 8.0)), (0, (-0.2, 5.0))]
    assert [p.number for p in rung_points(trials, OBJECTIVES, 1, number=2)] == [2, 0, 1]
    assert [p.number for p in rung_points(trials, OBJECTIVES, 3, number=0)] == [0]


def test_an_int8_objective_is_judged_at_a_rung_on_the_float_map_of_that_epoch() -> None:
    int8 = (("map50_95_int8", "maximize"), ("latency_ms", "minimize"))
    trials = [frozen(0, TrialState.COMPLETE, [0.1, 0.2, 0.3], 5.0), frozen(1, TrialState.RUNNING, [0.02, 0.05], 4.0),
              frozen(2, TrialState.RUNNING, [0.01, 0.04], 6.0)]  # only trained trials will have an INT8 mAP
    at2 = rung_points(trials, int8, 2, number=2)
    assert [(p.number, p.values) for p in at2] == [(2, (-0.04, 6.0)), (0, (-0.2, 5.0)), (1, (-0.05, 4.0))]
    decision = decide(at2, 2, 3, 2, accuracy=[0])
    assert not decision.go_on and decision.dominated_by == (0, 1)  # a running INT8 trial can be stopped


def config(tmp_path: Path, rungs: tuple[int, ...], eta: int) -> RunConfig:
    return RunConfig(study="s", storage="", root=str(tmp_path), space_file="", rungs=rungs, eta=eta,
                     trial=TrialSettings(data="", out=str(tmp_path), epochs=4))


def progress(epoch: int, map50_95: float, threads: int = 0) -> EpochProgress:
    return EpochProgress(epoch, 4, map50_95, 2 * map50_95, float(epoch), threads)


def test_two_workers_on_one_sqlite_study_decide_the_same(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_a = optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage(url),
                                  directions=["maximize", "minimize"])
    study_b = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))  # another connection
    for curve, latency in (([0.1, 0.5], 5.0), ([0.1, 0.2], 20.0)):  # finished: trials 0 and 1
        study_a.add_trial(create_trial(state=TrialState.COMPLETE, values=[curve[-1], latency],
                                       user_attrs={"hash": f"f{latency}"},
                                       system_attrs=record_attrs({"epoch_map": curve,
                                                                  "metrics": {"latency_ms": latency}})))
    cfg = config(tmp_path, rungs=(2,), eta=2)
    watchers = []
    for study, latency in ((study_a, 4.0), (study_b, 30.0)):  # worker A runs trial 2, worker B trial 3
        trial = study.ask()
        trial.set_user_attr("hash", f"run{trial.number}")
        write_record(trial, "metrics", {"latency_ms": latency})
        watchers.append(RungWatcher(study, trial, cfg))
    wa, wb = watchers
    assert not wa.on_epoch(progress(1, 0.3)) and not wb.on_epoch(progress(1, 0.05, threads=2))  # not a rung
    assert not wa.on_epoch(progress(2, 0.6))  # A at rung 2 first: it dominates both finished trials
    assert wb.on_epoch(progress(2, 0.1, threads=1))  # B reads A's streamed value from the storage: stopped
    assert wb.stopped is not None and wb.stopped.dominated_by == (0, 1, 2) and wb.stopped.of == 4
    (a_first,) = read_record(study_b.trials[2], "rungs")
    assert a_first["of"] == 3 and a_first["position"] == 1 and a_first["go_on"]
    assert read_record(study_a.trials[3], "epoch_map") == [0.05, 0.1]
    assert read_record(study_a.trials[3], "epoch_map50") == [0.1, 0.2]
    assert study_a.trials[3].user_attrs["epoch_threads"] == [2, 1]  # a stopped trial keeps its thread counts
    assert "epoch_threads" not in study_a.trials[2].user_attrs  # off the CPU (threads 0): nothing to record
    assert not {"rungs", "epoch_map", "epoch_map50"} & set(study_a.trials[3].user_attrs)  # records, not user attrs
    for number in (2, 3):  # the same stored values give the same decision, whichever worker reads them
        da = rung_decision(study_a, number, OBJECTIVES, 2, 2)
        assert da == rung_decision(study_b, number, OBJECTIVES, 2, 2)
    assert rung_decision(study_a, 3, OBJECTIVES, 2, 2) == wb.stopped
    assert rung_decision(study_a, 2, OBJECTIVES, 3, 2) is None  # nobody is at epoch 3 yet


def test_the_baseline_is_never_stopped_but_its_decision_is_kept(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"hash": "good"},
                                 system_attrs=record_attrs({"epoch_map": [0.9], "metrics": {"latency_ms": 0.1}})))
    study.enqueue_trial({}, user_attrs={"baseline": True})
    trial = study.ask()
    trial.set_user_attr("hash", "stock")
    write_record(trial, "metrics", {"latency_ms": 9.0})
    watcher = RungWatcher(study, trial, config(tmp_path, rungs=(1,), eta=2))
    assert not watcher.on_epoch(progress(1, 0.1)) and watcher.stopped is None
    (decision,) = read_record(study.trials[1], "rungs")
    assert not decision["go_on"] and decision["dominated_by"] == [0]


def test_epoch_progress_line_round_trips_and_other_lines_are_not_progress() -> None:
    p = EpochProgress(3, 12, 0.123456, 0.25, 17.5)
    line = p.to_line()
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert EpochProgress.from_line(line) == p
    on_cpu = EpochProgress(3, 12, 0.1, 0.2, 5.0, threads=2)
    assert EpochProgress.from_line(on_cpu.to_line()) == on_cpu
    assert EpochProgress.from_line(line.replace(', "threads": 0', "")) == p  # a line without the count: 0
    for other in ("epoch 3/12 mAP50-95 0.123 (17 s)\n", "@repnas-epoch {broken\n", '@repnas-epoch {"epoch": 1}\n'):
        assert EpochProgress.from_line(other) is None


FAKE_CHILD = """
import subprocess, sys, time
from trainers.train.results import EpochProgress
child = subprocess.Popen(["sleep", "60"])
open(sys.argv[1], "w").write(str(child.pid))
for epoch in range(1, 6):
    time.sleep(0.2)
    sys.stderr.write(f"epoch {epoch}/5\\n" + EpochProgress(epoch, 5, 0.1 * epoch, 0.2, 0.2 * epoch).to_line())
    sys.stderr.flush()
print('{"ok": false, "kind": "error", "reason": "ran to the end"}')
"""


def test_the_runner_kills_the_whole_process_group_when_told_to_stop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import search.engine.runner
    from trainers.model.architecture import Architecture
    from trainers.train.results import TrialJob

    script, pid_file = tmp_path / "child.py", tmp_path / "grandchild.pid"
    script.write_text(FAKE_CHILD)
    monkeypatch.setattr(search.engine.runner, "trial_command", lambda job: [sys.executable, str(script), str(pid_file)])
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    seen: list[int] = []

    def on_epoch(p: EpochProgress) -> bool:
        seen.append(p.epoch)
        return p.epoch == 2

    job = TrialJob(Architecture.baseline("yolo26.yaml", "n"), TrialSettings(data="", out=str(tmp_path / "t")))
    t0 = time.time()
    result = search.engine.runner.run_trial_process(job, on_epoch=on_epoch)
    assert result == search.engine.runner.TrialStopped(2, job.architecture.hash) and seen == [1, 2]
    assert time.time() - t0 < 5
    grandchild = Path(f"/proc/{pid_file.read_text()}/stat")
    time.sleep(0.2)
    assert not grandchild.exists() or grandchild.read_text().split(")")[-1].split()[0] == "Z"  # the whole group
    log = (tmp_path / "t" / "trial.log").read_text()
    assert "epoch 2/5" in log and "epoch 3/5" not in log and "@repnas-epoch" in log


def test_rungs_are_checked_at_the_edges(tmp_path: Path) -> None:
    assert parse_rungs("3,6") == (3, 6) and parse_rungs("") == () and parse_rungs(" ") == ()
    for bad, match in (("6,3", "increasing"), ("0", "increasing positive"), ("3,,6", "comma-separated"),
                       ("x", "comma-separated")):
        with pytest.raises(ValueError, match=match):
            parse_rungs(bad)
    with pytest.raises(ValueError, match="below the trial's 6 epochs, got \\[3, 6\\]"):
        check_rungs((3, 6), epochs=6)
    spec = parse_space({"stages": {"p3_backbone": {}}, "train": {"rungs": [2, 4], "eta": 4}})
    assert (spec.train.rungs, spec.train.eta) == ((2, 4), 4)
    assert parse_space({"stages": {"p3_backbone": {}}}).train.rungs == ()
    for train, field in (({"rungs": [4, 2]}, "train.rungs"), ({"rungs": [0]}, r"train.rungs\[0\]"),
                         ({"eta": 1}, "train.eta"), ({"rungs": ["3"]}, r"train.rungs\[0\]")):
        with pytest.raises(SpaceError, match=field):
            parse_space({"stages": {"p3_backbone": {}}, "train": train})
    space = tmp_path / "s.yaml"
    space.write_text("stages: {p3_backbone: {}}\ntrain: {epochs: 8, rungs: [2, 4], eta: 2}\n")
    base = ["--space", str(space), "--studies-dir", str(tmp_path / "st")]
    cfg, _ = validate(base)
    assert (cfg.rungs, cfg.eta, cfg.timeout) == ((2, 4), 2, None)
    cfg, _ = validate([*base, "--rungs", "", "--eta", "5", "--timeout", "90"])
    assert (cfg.rungs, cfg.eta, cfg.timeout) == ((), 5, 90.0)
    assert RunConfig.from_record(cfg.with_trial().to_record()) == cfg
    cfg, _ = validate([*base, "--rungs", "1,3"])
    assert RunConfig.from_record(cfg.to_record()).rungs == (1, 3)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("epochs", "rungs"), [(None, (3, 6)), ("12", (3, 6)), ("5", (1, 3)), ("4", (1, 2)),
                                               ("3", (1, 2)), ("2", (1,)), ("1", ()), ("40", (10, 20))])
def test_the_default_space_takes_any_epochs(tmp_path: Path, epochs: str | None, rungs: tuple[int, ...],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # issue 34: `--epochs 5` with spaces/yolo26.yaml exited 2, "train.rungs must be below the trial's 5 epochs"
    flags = ["--epochs", epochs] if epochs else []
    cfg, _ = validate(["--space", str(REPO / "spaces" / "yolo26.yaml"), "--studies-dir", str(tmp_path), *flags])
    assert (cfg.trial.epochs, cfg.rungs) == (int(epochs or 12), rungs)
    assert f"--rungs {','.join(map(str, rungs)) or repr('')}" in cfg.command()  # the rungs used, as epochs
    assert RunConfig.from_record(cfg.to_record()).rungs == rungs
    err = capsys.readouterr().err
    assert f"at {cfg.trial.epochs} epochs: rungs at epochs {list(rungs)}" in err  # the rungs used, said at the start


def test_integer_rungs_keep_their_epochs_and_scale_with_the_schedule(tmp_path: Path) -> None:
    space = tmp_path / "old.yaml"
    space.write_text("stages: {p3_backbone: {}}\ntrain: {epochs: 8, rungs: [2, 4]}\n")
    base = ["--space", str(space), "--studies-dir", str(tmp_path / "st")]
    assert validate(base)[0].rungs == (2, 4)  # an older space file at its own schedule: as written
    assert validate([*base, "--epochs", "8"])[0].rungs == (2, 4)
    assert validate([*base, "--epochs", "4"])[0].rungs == (1, 2)
    assert validate([*base, "--epochs", "16"])[0].rungs == (4, 8)
    assert validate([*base, "--epochs", "16", "--rungs", "2,4"])[0].rungs == (2, 4)  # flags: absolute epochs
    space.write_text("stages: {p3_backbone: {}}\ntrain: {epochs: 6, rungs: [3, 6]}\n")
    with pytest.raises(SystemExit):  # a file that does not fit its own schedule is still refused
        validate(base)
    assert validate([*base, "--epochs", "3"])[0].rungs == (2,)  # scaled: 1.5 -> 2, and 3 reaches the end


def test_schedule_rungs_rounds_and_drops() -> None:
    assert schedule_rungs((0.25, 0.5), 12, 12) == (3, 6)
    assert schedule_rungs((0.3, 0.35), 12, 4) == (1,)  # both round to epoch 1: collapsed into one
    assert schedule_rungs((0.1, 0.9), 12, 4) == ()  # epoch 0 and the last epoch: dropped
    assert schedule_rungs((3, 6), 12, 5) == (1, 3) and schedule_rungs((), 12, 5) == ()
    assert schedule_rungs((3, 6), 6, 6) == (3, 6)  # unscaled: check_rungs decides
    assert parse_space({"stages": {"p3_backbone": {}}, "train": {"rungs": [0.25, 0.5]}}).train.rungs == (0.25, 0.5)
    for rungs, field in (([0.5, 0.25], r"train.rungs: must be increasing"), ([0.5, 1.0], r"train.rungs\[1\]"),
                         ([0.25, 3], r"train.rungs\[1\]: must be a fraction .* got 3"), ([0.0], r"train.rungs\[0\]"),
                         ([2, 0.5], r"train.rungs\[0\]")):
        with pytest.raises(SpaceError, match=field):
            parse_space({"stages": {"p3_backbone": {}}, "train": {"rungs": rungs}})


@pytest.mark.parametrize(("args", "needle"), [
    (["--rungs", "3,1"], "--rungs must be increasing positive epochs, got [3, 1]"),
    (["--rungs", "1"], "--rungs: must be below the trial's 1 epochs, got [1]"),
    (["--eta", "1"], "--eta must be an integer in [2, 100], got 1"),
    (["--timeout", "-1"], "--timeout must be a positive number"),
])
def test_bad_rung_flags_are_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    r = run_search(tmp_path, "stages: {p3_backbone: {}}\ntrain: {epochs: 1}\n", *args, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_a_rung_without_accuracy_signal_stops_nobody_and_says_so() -> None:
    # early epochs: every mAP near 0, so sorting would rank on latency alone and stop the slower ones
    flat = pts((0.0, 1.0), (0.004, 2.0), (0.001, 3.0), (0.0, 4.0), (0.006, 5.0), (0.002, 6.0))
    slowest = decide(flat, 5, eta=3, epoch=2, accuracy=[0])
    assert slowest.go_on and slowest.keep == 6 and not slowest.signal and slowest.spread == pytest.approx(0.006)
    assert "no accuracy signal yet (mAP spans 0.0060 < 0.01 over 6 trials)" in slowest.reason(6)
    assert not decide(flat, 5, eta=3, epoch=2).go_on  # the same points, accuracy not named: latency decides
    apart = pts((0.0, 1.0), (0.004, 2.0), (0.001, 3.0), (0.0, 4.0), (0.006, 5.0), (0.03, 6.0))
    d = decide(apart, 3, eta=3, epoch=2, accuracy=[0])  # mAP separates now: the rule of the rung applies
    assert d.signal and d.keep == 4 and not d.go_on and d.dominated_by == (0, 1, 2)  # front 1: 0, 1, 4, 5
