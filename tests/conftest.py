"""Test session setup: four virtual CPU devices (for the data-parallel tests) and full-precision matmuls.

XLA reads its flags once, when the backend starts, so this must run before anything imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax

jax.config.update("jax_default_matmul_precision", "highest")
