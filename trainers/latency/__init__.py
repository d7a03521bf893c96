"""Fused-model latency: CUDA-graph replay on GPUs, many timed repeats on CPUs.

- :mod:`trainers.latency.report`: :class:`LatencyReport`, one figure and its conditions (no torch import).
- :mod:`trainers.latency.timing`: the timing loops (CPU wall clock, CUDA events, CUDA-graph replay).
- :mod:`trainers.latency.measure`: fuse a model, time it on a device, cache the figure per setting.

This package's ``__init__`` imports nothing, so ``python -m trainers.latency`` checks its
arguments before torch is imported.
"""
