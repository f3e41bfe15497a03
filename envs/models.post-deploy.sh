#!/usr/bin/env bash
# Snakemake runs this once after creating the environment, from the workflow's working directory
# (the repository root): it makes the `lego` command of this checkout available to the rules.
set -euo pipefail
python -m pip install --no-deps -e .
