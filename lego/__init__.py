"""MM-Lego pipeline library: slides, tabular modalities, cohorts and folds.

The library is importable and testable without Snakemake; the workflow calls it through
the ``lego`` command line (see :mod:`lego.cli`).
"""

__version__ = "0.1.0"
