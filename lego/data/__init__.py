"""Cohort assembly: labels, slide index, per-patient modality availability and folds."""
