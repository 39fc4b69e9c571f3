"""PA-100K (manual): `annotation.mat` + `data/`, 26 attributes, train/val/test."""

from tfds_synth_pedes.pa100k.builder import AttributeMatBuilder, Pa100k, load_mat, mat_text

__all__ = ["AttributeMatBuilder", "Pa100k", "load_mat", "mat_text"]
