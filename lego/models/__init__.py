"""MM-Lego models: modality encoders, LegoBlock, LegoMerge and LegoFuse (any number of modalities)."""

from lego.models.block import BlockConfig, LegoBlock
from lego.models.fuse import LegoFuse
from lego.models.merge import LegoMerge

__all__ = ["BlockConfig", "LegoBlock", "LegoMerge", "LegoFuse"]
