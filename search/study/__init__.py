"""The Optuna study of a search: what was decided, what each trial recorded, where it is stored.

- :mod:`search.study.config`: RunConfig: the run's one typed configuration, recorded on the study (password left out).
- :mod:`search.study.records`: trial records (system attrs), retrain records on the study.
- :mod:`search.study.artifacts`: trial and report files as Optuna artifacts; the dashboard command.
- :mod:`search.study.storage`: storage, sampler, open/resume, finished counts, heartbeats, dead-worker recovery.
- :mod:`search.study.outage`: a storage that waits through a database outage.
- :mod:`search.study.failures`: FailKind and fail_trial: the one failure path.
- :mod:`search.study.targets`: latency figures of other targets stored on the study.
"""

__all__ = ["config", "records", "artifacts", "storage", "outage", "failures", "targets"]
