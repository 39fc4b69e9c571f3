"""Market-1501 (manual): official bounding_box_train / query / bounding_box_test folders."""

from tfds_synth_pedes.market1501.builder import Market1501, ReidFolderBuilder, parse_name

__all__ = ["Market1501", "ReidFolderBuilder", "parse_name"]
