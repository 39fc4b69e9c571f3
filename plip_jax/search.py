"""`python -m plip_jax.search`: the command of plip_jax.tools.search, kept at its README name."""
import sys

from plip_jax.tools.search import cli

if __name__ == "__main__":
    sys.exit(cli())
