"""The Optuna study of a search: run config, records, artifacts, storage and outages, targets, failures."""
