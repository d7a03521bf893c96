"""One trial's work: build -> train -> evaluate -> measure latency.

Heavy modules (torch, Ultralytics) are imported by the functions that need them, so
``from trainers.architecture import Architecture`` stays light.
"""
