"""Shifted procedural stand-ins of CUHK-PEDES (style A) and ICFG-PEDES (style B): other people,
pictures and caption language than procedural SYNTH-PEDES, so fine-tuning on them shows transfer."""
