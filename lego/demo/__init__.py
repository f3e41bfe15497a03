"""The built-in synthetic demo cohort (slides, omics and clinical tables from one seed)."""
