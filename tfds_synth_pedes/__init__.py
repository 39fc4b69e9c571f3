"""TFDS builders for PLIP data without TensorFlow: SYNTH-PEDES (released or procedural),
CUHK-PEDES, ICFG-PEDES and RSTPReid, all with the features of docs/contracts.md.

Build with `python -m tfds_synth_pedes.build NAME ...`; read with `tfds_synth_pedes.build.data_source`.
"""
