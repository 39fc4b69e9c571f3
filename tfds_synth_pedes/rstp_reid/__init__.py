"""RSTPReid (manual): `data_captions.json` (img_path) + `imgs/`, official train/val/test splits."""

from tfds_synth_pedes.rstp_reid.builder import RstpReid

__all__ = ["RstpReid"]
