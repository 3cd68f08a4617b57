"""Evaluation of trained runs: loading a checkpoint, predictions, metrics (and, later,
intervals, operating points, calibration, subgroups, reports)."""
