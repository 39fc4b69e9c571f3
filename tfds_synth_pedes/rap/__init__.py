"""RAP v1 (manual): `RAP_annotation.mat` + `RAP_dataset/`, 51 attributes, trainval/test."""

from tfds_synth_pedes.rap.builder import Rap

__all__ = ["Rap"]
