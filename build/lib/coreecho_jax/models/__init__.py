"""Models: UniFormer video backbone, CoReEcho heads and the CoReEcho encoder + head (Flax NNX)."""

from coreecho_jax.models.coreecho import CoReEcho, build_coreecho, build_model
from coreecho_jax.models.head import ClassificationHead, RegressionHead
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import UniFormer, UniFormerConfig, uniformer_config

__all__ = [
    "CoReEcho",
    "build_coreecho",
    "build_model",
    "ClassificationHead",
    "RegressionHead",
    "make_rngs",
    "UniFormer",
    "UniFormerConfig",
    "uniformer_config",
]
