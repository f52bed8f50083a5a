"""Trainer service: builds, evaluates, exports and checks models from a dataset contract."""
