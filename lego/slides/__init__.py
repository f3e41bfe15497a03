"""Whole-slide image handling: reading, tissue segmentation, patch grids and patch encoders."""

from lego.slides.reader import Slide, open_slide

__all__ = ["Slide", "open_slide"]
