"""The baseline models' names: the one list the CLI, the workflow and the fitting code read.

A module of names only (no numpy, pandas or torch), so that the CLI's argument parser and the
Snakefile can import it without paying for the fitting code. ``config/schema.yaml`` spells the
same names in its ``evaluation.baselines`` enum; a test checks they agree.
"""

from __future__ import annotations

# Classical models fitted per fold on one input (a modality, or several concatenated: "early").
TASK_BASELINES: dict[str, tuple[str, ...]] = {"survival": ("coxnet", "rsf"), "classification": ("logreg", "rf")}
FITTED_BASELINES: tuple[str, ...] = tuple(m for methods in TASK_BASELINES.values() for m in methods)
# Baselines with their own rules: attention-MIL on the slides alone, and the late-fusion mean of the blocks.
OTHER_BASELINES: tuple[str, ...] = ("abmil", "ensemble")
ALL_BASELINES: tuple[str, ...] = FITTED_BASELINES + OTHER_BASELINES
