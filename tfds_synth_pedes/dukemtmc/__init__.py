"""DukeMTMC-reID (manual): official bounding_box_train / query / bounding_box_test folders."""

from tfds_synth_pedes.dukemtmc.builder import DukeMtmc

__all__ = ["DukeMtmc"]
