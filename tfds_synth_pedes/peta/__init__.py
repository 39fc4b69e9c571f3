"""PETA (manual): `PETA.mat` + `images/`, 35 attributes, partition 0 train/val/test."""

from tfds_synth_pedes.peta.builder import Peta

__all__ = ["Peta"]
