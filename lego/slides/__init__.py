"""Whole-slide image handling: reading, tissue segmentation, patch grids and patch encoders.

Nothing is imported here: the model stages read feature files (``lego.slides.features``) in
environments without OpenSlide or OpenCV, so importing this package must not load them.
"""
