"""The search: space files, the Optuna / Ray Tune drivers, the Pareto front, export."""
