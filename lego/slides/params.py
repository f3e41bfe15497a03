"""Per-slide settings, in one light module (no OpenCV, numpy or OpenSlide).

Their fields, types and defaults are the config schema's ``tissue`` and ``patches`` sections, and
the slide extensions its ``slides.extensions`` default (:mod:`lego.settings`): the CLI's segment and
extract flags, the workflow's config and this code read one definition.
"""

from __future__ import annotations

from lego.settings import default, settings_class

# Every format OpenSlide reads (https://openslide.org/formats/), by file extension.
SLIDE_EXTENSIONS: tuple[str, ...] = tuple(default("slides.extensions"))

TissueParams = settings_class("TissueParams", "tissue", __name__, "CLAM-style segmentation (see lego.slides.tissue).")
PatchParams = settings_class("PatchParams", "patches", __name__, "The micron-based patch grid (see lego.slides.patches).")
