"""One trial's training, in its own process.

- :mod:`trainers.train.trial`: the trial process: python -m trainers.train.trial --job trial.json.
- :mod:`trainers.train.results`: TrialSettings, TrialJob, TrialResult, TrialFailure, FailKind: the trial contract.
- :mod:`trainers.train.trainer`: the Ultralytics DetectionTrainer that builds our architecture.
- :mod:`trainers.train.data`: the embedded synthetic dataset.
- :mod:`trainers.train.dataset`: data YAML reading.
- :mod:`trainers.train.threads`: training thread counts (auto).
- :mod:`trainers.train.devices`: device choice and names.
- :mod:`trainers.train.device_lock`: one measurement at a time per device.
- :mod:`trainers.train.memory`: memory figures.
- :mod:`trainers.train.teacher`: checkpoints as teachers.
- :mod:`trainers.train.inherit`: initialisation from a checkpoint.
- :mod:`trainers.train.evaluate`: validation mAP of a model.
"""

__all__ = [
    "trial",
    "results",
    "trainer",
    "data",
    "dataset",
    "threads",
    "devices",
    "device_lock",
    "memory",
    "teacher",
    "inherit",
    "evaluate",
]
