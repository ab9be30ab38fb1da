"""Experiment binaries: ``python -m experiments.NAME --flagfile=experiments/configs/NAME.cfg``."""
