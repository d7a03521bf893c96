"""The drivers take an :class:`~search.engine.objective.Objective`: a new way of scoring plugs in as a class."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.engine.objective import Objective, Outcome
from search.engine.optuna_driver import Progress, worker_loop
from search.run import validate
from search.space import SearchSpace
from search.study.artifacts import artifact_store
from search.study.storage import make_storage, open_study
from trainers.model.architecture import Architecture

SPACE = "stages:\n  p3_backbone: {block: [C3k2, RepViT]}\n"


class ConstantObjective:
    """Scores every architecture without training: proves a driver needs nothing but the protocol."""

    def __init__(self, space: SearchSpace) -> None:
        self.space, self.evaluated = space, []

    def sample(self, trial: optuna.Trial) -> Architecture | Outcome:
        arch = self.space.suggest(trial)
        trial.set_user_attr("hash", arch.hash)
        return arch

    def evaluate(self, study: optuna.Study, trial: optuna.Trial, prefix: str = "",
                 arch: Architecture | None = None) -> Outcome:
        arch = arch or self.sample(trial)
        self.evaluated.append(trial.number)
        trial.set_user_attr("source", "constant")
        return Outcome(TrialState.COMPLETE, [0.5, float(trial.number)], "constant")


@pytest.fixture
def setup(tmp_path: Path) -> tuple:
    (tmp_path / "space.yaml").write_text(SPACE)
    cfg, space = validate(["--space", str(tmp_path / "space.yaml"), "--studies-dir", str(tmp_path / "st"),
                           "--trials", "3"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(cfg.storage)
    study = open_study(cfg.study, storage, cfg.objectives, optuna.samplers.RandomSampler(seed=0))
    return cfg, space, storage, study


def test_the_optuna_driver_runs_any_objective(setup: tuple) -> None:
    cfg, space, storage, study = setup
    objective = ConstantObjective(space)
    typed: Objective = objective  # structural: nothing to inherit
    assert typed is objective
    worker_loop(study, storage, objective, cfg, Progress(study, cfg), threading.Lock(), artifact_store(cfg))
    trials = study.get_trials(deepcopy=False)
    assert objective.evaluated == [0, 1, 2] and [t.values for t in trials] == [[0.5, 0.0], [0.5, 1.0], [0.5, 2.0]]
    assert {t.user_attrs["source"] for t in trials} == {"constant"}


def test_the_ray_searcher_samples_with_the_objective(setup: tuple) -> None:
    pytest.importorskip("ray.tune.search")
    from search.engine.ray_searcher import OptunaAskTell

    cfg, space, storage, study = setup
    searcher = OptunaAskTell(study, ConstantObjective(space), target=1)
    sent = searcher.suggest("tune-1")
    assert sent["number"] == 0
    assert Architecture.from_dict(sent["architecture"]).hash == study.trials[0].user_attrs["hash"]
    searcher.on_trial_complete("tune-1", {"state": "COMPLETE", "values": [0.4, 3.0], "note": ""})
    assert study.trials[0].values == [0.4, 3.0] and searcher.suggest("tune-2") == "FINISHED"
