"""`python -m plip_jax.serve`: the command of plip_jax.tools.serve (person search in the browser)."""
import sys

from plip_jax.tools.serve import cli

if __name__ == "__main__":
    sys.exit(cli())
