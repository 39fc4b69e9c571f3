"""CUHK-PEDES (manual): `reid_raw.json` + `imgs/`, official train/val/test splits."""

from tfds_synth_pedes.cuhk_pedes.builder import CuhkPedes

__all__ = ["CuhkPedes"]
