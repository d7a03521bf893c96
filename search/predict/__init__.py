"""Latency prediction over a space: sampling, interleaved measurement, fit and validation statistics."""

__all__ = ["fit", "source", "store"]
