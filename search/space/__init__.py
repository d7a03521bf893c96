"""Search spaces: YAML files that say which blocks and options each YOLO26 stage may take.

``SearchSpace.load(path)`` validates a file (no torch import); ``SearchSpace.suggest(trial)``
samples an :class:`~trainers.model.architecture.Architecture` through Optuna's distributions.
"""

from __future__ import annotations

from search.space.errors import SpaceError
from search.space.sampling import SearchSpace
from search.space.schema import Constraint, OneShotSettings, SpaceFile, TrainSettings, load_space
from search.space.stages import StageSpace

__all__ = [
    "Constraint",
    "OneShotSettings",
    "SearchSpace",
    "SpaceError",
    "SpaceFile",
    "StageSpace",
    "TrainSettings",
    "load_space",
]
