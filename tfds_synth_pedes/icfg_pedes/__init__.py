"""ICFG-PEDES (manual): `ICFG_PEDES.json` or `ICFG-PEDES.json` + `imgs/`; splits train/test only."""

from tfds_synth_pedes.icfg_pedes.builder import IcfgPedes

__all__ = ["IcfgPedes"]
