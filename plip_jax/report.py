"""`python -m plip_jax.report`: the command of plip_jax.tools.report, kept at its README name."""
import sys

from plip_jax.tools.report import cli

if __name__ == "__main__":
    sys.exit(cli())
