"""User-facing error types.

Every error raised for bad input names the offending file (and row, column or slide) and says
how to fix it, so the CLI can print the message alone instead of a traceback.
"""

from __future__ import annotations


class LegoError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class ConfigError(LegoError):
    """The configuration does not match the schema or is inconsistent."""


class InputError(LegoError):
    """A cohort table or feature file is malformed."""


class SlideError(LegoError):
    """A slide cannot be processed; batch runs record it in ``qc/failed.tsv`` and go on."""

    def __init__(self, slide: str, reason: str):
        self.slide = str(slide)
        self.reason = reason
        super().__init__(f"slide {self.slide}: {reason}")
