"""Fixtures for the tests of ``blocks``; the helpers themselves live in ``_helpers.py``.

``randomize_`` is re-exported here so ``from conftest import randomize_`` also works, but
prefer ``from _helpers import randomize_`` (several folders may own a ``conftest``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from _helpers import randomize_
from torch import nn

__all__ = ["randomize_"]


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    """Deterministic inputs and one thread per test (the test machine is shared); restored after."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def randomize() -> Callable[[nn.Module], nn.Module]:
    """The :func:`_helpers.randomize_` function, as a fixture."""
    return randomize_
