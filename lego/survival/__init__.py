"""Task targets, losses and metrics (survival and classification)."""
