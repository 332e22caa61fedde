"""``python -m coreecho_jax <command> ...``: the ``coreecho`` command (:mod:`coreecho_jax.cli`)."""

import sys

from coreecho_jax import cli

if __name__ == "__main__":
    sys.exit(cli.main())
