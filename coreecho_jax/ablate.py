"""Old command line kept: ``python -m coreecho_jax.ablate`` runs :mod:`coreecho_jax.experiments.ablate`."""

from coreecho_jax.experiments import ablate

if __name__ == "__main__":
    ablate.main()
