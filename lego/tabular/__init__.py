"""Tabular modalities (omics, clinical): reading, typing and per-fold fitted preprocessing."""
