"""SYNTH-PEDES: the released dataset (`full`) and its rendered stand-in (`procedural`)."""

from tfds_synth_pedes.synth_pedes.builder import SynthPedes, SynthPedesConfig, heldout_ids, make_config

__all__ = ["SynthPedes", "SynthPedesConfig", "heldout_ids", "make_config"]
