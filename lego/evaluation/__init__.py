"""Metrics, bootstrap intervals, baselines and figures: everything after prediction."""
