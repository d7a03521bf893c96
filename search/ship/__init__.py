"""What turns a trial into a deliverable (the commands pick, retrain and export sit above it).

- :mod:`search.ship.model_card`: the model card: metrics, checks, latency, reproduce commands.
"""

__all__ = ["model_card"]
