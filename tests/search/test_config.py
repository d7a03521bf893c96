"""The run configuration: resolved once from flags + space, recorded as one versioned attr, read back typed.

Also: a study written before ``run_config`` existed (``data/legacy_study.db``) still opens,
with its objectives, constraints and settings, and a model can be picked from it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import optuna
import pytest

from search.pick import pick
from search.run import validate
from search.space import Constraint
from search.study.config import CONFIG_ATTR, CONFIG_VERSION, RunConfig, parse_constraint

LEGACY_DB = Path(__file__).resolve().parent / "data" / "legacy_study.db"

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT]}
objectives: {map50_95: maximize, params_m: minimize}
constraints: ['latency_ms <= 50', 'map50 >= 0.1']
latency: {imgsz: 96, device: cpu, dtype: float32}
train: {epochs: 3, imgsz: 64, batch: 2}
"""


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "myspace.yaml"
    path.write_text(SPACE)
    return path


def test_flags_override_the_space_file_once_at_the_edge(tmp_path: Path, space_file: Path) -> None:
    cfg, space = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st"), "--epochs", "5",
                           "--batch", "4", "--seed", "7", "--sampler", "random", "--latency-budget-ms", "12.5"])
    assert cfg.study == "myspace" and cfg.storage == f"sqlite:///{tmp_path / 'st' / 'myspace.db'}"
    assert cfg.objectives == (("map50_95", "maximize"), ("params_m", "minimize")) == space.spec.objectives
    assert cfg.constraints == (Constraint("latency_ms", "<=", 50.0), Constraint("map50", ">=", 0.1))
    t = cfg.trial
    assert (t.epochs, t.imgsz, t.batch, t.seed) == (5, 64, 4, 7)  # flags win, the space fills the rest
    assert (t.latency.imgsz, t.latency.device, t.latency.dtype, t.device) == (96, "cpu", "float32", "cpu")
    assert t.out == str(tmp_path / "st" / "myspace") and t.latency_cache == str(tmp_path / "st" / "latency_cache.json")
    assert (cfg.sampler, cfg.latency_budget_ms, cfg.space_file) == ("random", 12.5, str(space_file.resolve()))
    assert t.data == "" and t.nc is None  # the embedded set is resolved (and generated) after validation


def test_recorded_on_a_study_as_one_versioned_attr_and_read_back_equal(tmp_path: Path, space_file: Path) -> None:
    cfg, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st")])
    cfg = cfg.with_trial(data=str(tmp_path / "d.yaml"), nc=3)
    study = optuna.create_study(study_name=cfg.study, storage=cfg.storage, directions=["maximize", "minimize"])
    cfg.record_on(study)
    again = optuna.load_study(study_name=cfg.study, storage=cfg.storage)
    assert list(again.user_attrs) == [CONFIG_ATTR]
    assert again.user_attrs[CONFIG_ATTR]["version"] == CONFIG_VERSION
    back = RunConfig.from_study(again)
    assert back == cfg and back.source == "run_config"
    assert back.trial.nc == 3 and back.constraints[1].op == ">="


def test_another_record_version_is_refused(tmp_path: Path, space_file: Path) -> None:
    cfg, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st")])
    record = {**cfg.to_record(), "version": CONFIG_VERSION + 1}
    with pytest.raises(ValueError, match=f"run_config version must be {CONFIG_VERSION}, got {CONFIG_VERSION + 1}"):
        RunConfig.from_record(record)


def test_constraint_text_round_trips_and_bad_text_is_refused() -> None:
    for c in (Constraint("params_m", "<=", 4.0), Constraint("map50_95", ">=", 0.25)):
        assert parse_constraint(str(c)) == c
    with pytest.raises(ValueError, match="got 'params_m < 4'"):
        parse_constraint("params_m < 4")


@pytest.fixture
def legacy_storage(tmp_path: Path) -> str:
    db = tmp_path / "legacy.db"
    shutil.copyfile(LEGACY_DB, db)
    return f"sqlite:///{db}"


def test_a_study_written_before_run_config_still_opens(legacy_storage: str) -> None:
    study = optuna.load_study(study_name="legacy", storage=legacy_storage)
    assert CONFIG_ATTR not in study.user_attrs and "objectives" in study.user_attrs  # really the old format
    cfg = RunConfig.from_study(study, legacy_storage)
    assert cfg.source == "legacy attrs"
    assert cfg.objectives == (("map50_95", "maximize"), ("latency_ms", "minimize"))
    assert cfg.constraints == (Constraint("params_m", "<=", 4.0),)
    t = cfg.trial
    assert (t.epochs, t.imgsz, t.batch) == (1, 64, 4)
    assert (t.latency.imgsz, t.latency.device, t.latency.dtype) == (64, "cpu", "auto")
    assert t.data.endswith("coco8.yaml") and cfg.space_file.endswith("space.yaml")
    assert cfg.root == str(Path(legacy_storage[len("sqlite:///"):]).parent)


def test_pick_reads_the_legacy_study_typed(legacy_storage: str) -> None:
    args = argparse.Namespace(storage=legacy_storage, study="legacy", trial=None, pick="fastest", arch=None)
    chosen = pick(args)
    assert chosen.config is not None and chosen.config.constraints == (Constraint("params_m", "<=", 4.0),)
    assert chosen.trial is not None and chosen.trial.state.name == "COMPLETE"
    study = optuna.load_study(study_name="legacy", storage=legacy_storage)
    fastest = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.values[1])
    assert chosen.trial.values[1] == fastest.values[1]
    assert chosen.arch.hash == chosen.trial.user_attrs["hash"]


@pytest.mark.parametrize(("flags", "planned", "startup"), [
    ([], 10000, 10),  # no epoch budget: --trials sizes the random start (capped at 10)
    (["--epoch-budget", "40", "--epochs", "8"], 5, 3),  # 5 full trials: TPE models from the 4th on
    (["--epoch-budget", "400", "--epochs", "8", "--trials", "30"], 30, 10),  # --trials is the smaller
])
def test_an_epoch_budget_sizes_the_samplers_random_start(tmp_path: Path, space_file: Path, flags: list[str],
                                                         planned: int, startup: int) -> None:
    from search.study.storage import make_sampler

    cfg, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st"), "--trials", "10000",
                       *flags])
    assert cfg.planned_trials == planned
    sampler = make_sampler("tpe", 0, cfg.planned_trials)
    assert sampler._n_startup_trials == startup


def test_the_recorded_command_reruns_the_same_configuration(tmp_path: Path, space_file: Path) -> None:
    import shlex

    data = tmp_path / "d.yaml"
    data.write_text("names: {0: a}\n")
    cfg, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st"), "--epochs", "5",
                       "--imgsz", "96", "--batch", "4", "--seed", "7", "--sampler", "random", "--rungs", "2,4",
                       "--eta", "2", "--trials", "13", "--data", str(data), "--latency-budget-ms", "12.5",
                       "--epoch-budget", "40", "--timeout", "600", "--trial-timeout", "90", "--train-threads", "2"])
    assert cfg.trial.train_threads == 2
    words = shlex.split(cfg.command())
    assert words[:3] == ["python", "-m", "search.run"]
    again, _ = validate(words[3:])
    assert again == cfg
    bare, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st")])
    assert validate(shlex.split(bare.command())[3:])[0] == bare  # no data flag: the embedded set again
    assert "--rungs ''" in bare.command()  # the space's rungs are spelt out, here none
    assert bare.trial.train_threads == "auto" and "--train-threads auto" in bare.command()


def test_oneshot_mode_and_settings_are_recorded_and_in_the_command(tmp_path: Path, space_file: Path) -> None:
    import shlex

    cfg, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st"), "--mode", "oneshot",
                       "--supernet-epochs", "2", "--subnets", "9", "--calib-images", "0", "--retrain-top", "4",
                       "--supernet-device", "cpu"])
    assert cfg.mode == "oneshot" and cfg.trials == 9 and cfg.sampler == "nsga2"
    assert (cfg.oneshot.supernet_epochs, cfg.oneshot.subnets, cfg.oneshot.calib_images,
            cfg.oneshot.retrain_top, cfg.oneshot.supernet_device) == (2, 9, 0, 4, "cpu")
    command = cfg.command()
    for words in ("--mode oneshot", "--supernet-epochs 2", "--subnets 9", "--calib-images 0", "--retrain-top 4",
                  "--supernet-device cpu"):
        assert words in command
    assert validate(shlex.split(command)[3:])[0] == cfg  # the printed command reruns one-shot mode
    assert RunConfig.from_record(cfg.to_record()) == cfg
    assert cfg.to_record()["oneshot"] == {"supernet_epochs": 2, "subnets": 9, "calib_images": 0, "retrain_top": 4,
                                          "supernet_device": "cpu"}
    trial, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st")])
    assert (trial.mode, trial.oneshot) == ("trial", None) and "--mode trial" in trial.command()
    assert "--subnets" not in trial.command()


def test_a_run_config_recorded_before_the_mode_reads_as_per_trial(tmp_path: Path, space_file: Path) -> None:
    cfg, _ = validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st")])
    old = {k: v for k, v in cfg.to_record().items() if k not in ("mode", "oneshot")}
    back = RunConfig.from_record(old)
    assert back == cfg and (back.mode, back.oneshot) == ("trial", None)


@pytest.mark.parametrize(("flags", "message"), [
    (["--subnets", "5"], "--subnets needs --mode oneshot"),
    (["--mode", "oneshot", "--subnets", "5", "--retrain-top", "5"],
     "--retrain-top 5 is larger than the front can be: 5 subnets put at most 4 architectures besides stock"),
    (["--mode", "oneshot", "--subnets", "2"], "oneshot.retrain_top 2 is larger than the front can be"),
    (["--supernet-device", "cpu"], "--supernet-device needs --mode oneshot"),
    (["--mode", "oneshot", "--supernet-device", "0;1"], "--supernet-device must be 'auto', 'cpu', 'cuda', 'cuda:N', "
                                                        "a GPU index or GPU indices such as '0,1', got '0;1'"),
    (["--mode", "oneshot", "--supernet-device", "0,63"],
     "--supernet-device: device '0,63' asks for GPUs [0, 63]; this machine has"),
    (["--mode", "oneshot", "--supernet-device", "1,1"], "--supernet-device: device '1,1' names a GPU twice"),
    (["--mode", "oneshot", "--supernet-device", "63"], "--supernet-device: device '63' asks for GPUs [63]"),
    (["--mode", "oneshot", "--supernet-device", "cuda:63"], "--supernet-device: device 'cuda:63' asks for GPUs [63]"),
    (["--mode", "oneshot", "--supernet-device", "0,1,2", "--batch", "8"],
     "--supernet-device: batch 8 does not split evenly over the 3 GPUs of '0,1,2'"),
])
def test_oneshot_flags_are_checked_in_one_line(tmp_path: Path, space_file: Path, flags: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        validate(["--space", str(space_file), "--studies-dir", str(tmp_path / "st"), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "st" / "myspace.db").exists()
