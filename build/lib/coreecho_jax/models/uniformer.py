"""UniFormer video backbone (Li et al., ICLR 2022) as CoReEcho uses it, in Flax NNX, channels-last.

A port of the official Sense-X video ``uniformer.py`` (CoReEcho's copy, ``coreecho/uniformer.py``).
Attribute names mirror the torch ``state_dict`` names
(``patch_embed1.proj``, ``blocks3[1].attn.qkv``, ``norm``, ...), so that
:mod:`coreecho_jax.checkpoints.key_map` is a rename plus layout transposes.

Layout: input ``[B, T, H, W, C]`` (torch uses ``[B, C, T, H, W]``); every intermediate is channels-last.
For a 36x112x112 clip the stages see [18,28,28,64] -> [18,14,14,128] -> [18,7,7,320] -> [18,3,3,512].

Faithfulness notes: exact (erf) GELU; LayerNorm eps 1e-5 in the patch embeddings and 1e-6 in the
SABlocks; BatchNorm eps 1e-5, momentum 0.9 (torch 0.1) with torch's unbiased running-variance update;
attention scale ``head_dim ** -0.5`` applied after ``q @ k^T`` (or, bit-identically, to ``q`` when it is a
power of two); Dropout(``dropout``) after patch_embed1,
after each MLP's GELU and second linear, and after the attention projection; DropPath rates increase
linearly from 0 to ``drop_path`` over all blocks. Linear layers are initialised with N(0, 0.02)
(torch truncates at +-2, i.e. 100 sigma, so this is the same distribution) and zero bias, LayerNorm
and BatchNorm with ones/zeros, convolutions with torch's default uniform init.

Switches (defaults are the official behaviour): ``dtype='bfloat16'`` computes in bfloat16 with float32
parameters (norm statistics, softmax and pooling stay float32); ``remat=True`` rematerialises each
stage in the backward pass (``nnx.remat``); ``depthwise`` picks the depthwise conv implementation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from coreecho_jax.models.depthwise import IMPLEMENTATIONS
from coreecho_jax.models.layers import DROPOUT_RNGS, BatchNorm, Conv3d, Dropout, DropPath, torch_linear

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Initialisation of UniFormer's nn.Linear layers (``_init_weights``: trunc_normal(std=.02), bias 0).
_LINEAR_KERNEL_INIT = nnx.initializers.normal(0.02)
_ZEROS = nnx.initializers.zeros_init()


@dataclasses.dataclass(frozen=True)
class UniFormerConfig:
    """Architecture and switches of a UniFormer video backbone.

    Attributes:
      depth: blocks per stage (stages 1-2 are conv blocks, 3-4 self-attention blocks).
      dims: channels per stage.
      head_dim: channels per attention head (heads = dims[i] // head_dim).
      mlp_ratio: MLP hidden width / dim.
      in_chans: input channels.
      dropout: dropout rate (torch ``drop_rate``).
      drop_path: maximum stochastic-depth rate (torch ``drop_path_rate``), linear over the blocks.
      num_classes: size of the linear classifier on the pooled embedding (400 for Kinetics), or None.
      dtype: compute dtype, 'float32' or 'bfloat16'; parameters always stay float32.
      remat: rematerialise each stage during the backward pass.
      depthwise: depthwise conv implementation: 'auto', 'lax', 'shifted' or 'shifted_autodiff'.
      attention: self-attention implementation (same function, different kernels; see
        :func:`resolve_attention`): 'auto', 'einsum', 'xla' or 'cudnn'.
      dropout_rng: 'hash' (counter-hash masks, fast on CPU) or 'jax' (``jax.random.bernoulli``), see
        :class:`coreecho_jax.models.layers.Dropout`; both drop with probability ``dropout``.
      unbiased_running_var: BatchNorm running-variance update with the unbiased batch variance, as
        torch (True), or the biased one, as Flax (False).
    """

    depth: tuple[int, ...] = (3, 4, 8, 3)
    dims: tuple[int, ...] = (64, 128, 320, 512)
    head_dim: int = 64
    mlp_ratio: float = 4.0
    in_chans: int = 3
    dropout: float = 0.1
    drop_path: float = 0.0
    num_classes: int | None = None
    dtype: str = "float32"
    remat: bool = False
    depthwise: str = "auto"
    attention: str = "auto"
    dropout_rng: str = "hash"
    unbiased_running_var: bool = True

    def __post_init__(self):
        object.__setattr__(self, "depth", tuple(int(d) for d in self.depth))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        if len(self.depth) != 4 or len(self.dims) != 4:
            raise ValueError(f"UniFormer needs 4 stages: got depth={self.depth}, dims={self.dims}")
        if any(d < 1 for d in self.depth) or any(d < 1 for d in self.dims):
            raise ValueError(f"depth and dims must be positive: got depth={self.depth}, dims={self.dims}")
        for dim in self.dims[2:]:
            if dim % self.head_dim:
                raise ValueError(f"attention stage dim {dim} is not divisible by head_dim {self.head_dim}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.depthwise not in IMPLEMENTATIONS:
            raise ValueError(f"depthwise must be one of {IMPLEMENTATIONS}, got {self.depthwise!r}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")
        if self.dropout_rng not in DROPOUT_RNGS:
            raise ValueError(f"dropout_rng must be one of {DROPOUT_RNGS}, got {self.dropout_rng!r}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"dropout and drop_path must be in [0, 1): got {self.dropout}, {self.drop_path}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be positive or None, got {self.num_classes}")

    @property
    def num_heads(self) -> tuple[int, ...]:
        return tuple(d // self.head_dim for d in self.dims)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return DTYPES[self.dtype]


PRESETS: dict[str, dict[str, Any]] = {
    # CoReEcho's uniformer_small(): depth [3,4,8,3], dims [64,128,320,512], head_dim 64, drop_rate 0.1.
    "small": dict(depth=(3, 4, 8, 3), dims=(64, 128, 320, 512), head_dim=64, dropout=0.1),
    # CoReEcho's uniformer_base(): depth [5,8,20,7], same dims, drop_rate 0.3.
    "base": dict(depth=(5, 8, 20, 7), dims=(64, 128, 320, 512), head_dim=64, dropout=0.3),
    # The torch checkpoint fixtures' model (tests/fixtures/checkpoints).
    "tiny": dict(depth=(1, 1, 1, 1), dims=(16, 32, 64, 128), head_dim=16, dropout=0.1),
    # The UniFormer parity fixture (tests/fixtures/uniformer/small_d1121.json), with its K400 head.
    "small_d1121": dict(
        depth=(1, 1, 2, 1), dims=(64, 128, 320, 512), head_dim=64, dropout=0.1, num_classes=400
    ),
}


def uniformer_config(preset: str = "small", **overrides: Any) -> UniFormerConfig:
    """A :class:`UniFormerConfig` from a named preset ('small', 'base', 'tiny', 'small_d1121') plus overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown UniFormer preset {preset!r}; known: {sorted(PRESETS)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(UniFormerConfig)}
    if unknown:
        raise ValueError(f"unknown UniFormerConfig fields {sorted(unknown)}")
    return UniFormerConfig(**{**PRESETS[preset], **overrides})


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _layer_norm(dim: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Statistics in float32, two-pass variance (like torch), float32 parameters.
    return nnx.LayerNorm(
        dim, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs
    )


class PatchEmbed(nnx.Module):
    """Conv3d patch embedding followed by LayerNorm(eps=1e-5) over channels."""

    def __init__(self, in_dim, out_dim, kernel_size, strides, padding, *, impl, dtype, rngs: nnx.Rngs):
        self.proj = Conv3d(
            in_dim, out_dim, kernel_size, strides=strides, padding=padding, impl=impl, dtype=dtype, rngs=rngs
        )
        self.norm = _layer_norm(out_dim, 1e-5, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.proj(x))


class CMlp(nnx.Module):
    """Pointwise-conv MLP: fc1 (1x1x1) -> GELU -> Dropout -> fc2 (1x1x1) -> Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float, *, dtype, dropout_rng: str, rngs: nnx.Rngs):
        self.fc1 = Conv3d(dim, hidden, 1, dtype=dtype, rngs=rngs)
        self.fc2 = Conv3d(hidden, dim, 1, dtype=dtype, rngs=rngs)
        self.drop = Dropout(dropout, rng=dropout_rng, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.drop(self.fc2(self.drop(_gelu(self.fc1(x)))))


class CBlock(nnx.Module):
    """Convolutional UniFormer block (stages 1-2), on ``[B, T, H, W, C]``:
    ``x += pos_embed(x)``; ``x += conv2(attn(conv1(norm1(x))))``; ``x += mlp(norm2(x))`` with
    depthwise 3x3x3 ``pos_embed``, depthwise 5x5x5 ``attn``, BatchNorm ``norm1``/``norm2``."""

    def __init__(self, dim: int, cfg: UniFormerConfig, drop_path: float, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.pos_embed = Conv3d(dim, dim, 3, padding=1, groups=dim, impl=cfg.depthwise, dtype=dt, rngs=rngs)
        self.norm1 = BatchNorm(dim, unbiased_running_var=cfg.unbiased_running_var, dtype=dt)
        self.conv1 = Conv3d(dim, dim, 1, dtype=dt, rngs=rngs)
        self.conv2 = Conv3d(dim, dim, 1, dtype=dt, rngs=rngs)
        self.attn = Conv3d(dim, dim, 5, padding=2, groups=dim, impl=cfg.depthwise, dtype=dt, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)
        self.norm2 = BatchNorm(dim, unbiased_running_var=cfg.unbiased_running_var, dtype=dt)
        self.mlp = CMlp(
            dim, int(dim * cfg.mlp_ratio), cfg.dropout, dtype=dt, dropout_rng=cfg.dropout_rng, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _attention_forward(q, k, v, scale):
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    if scale != 1.0:
        logits = logits * scale
    probs = jax.nn.softmax(logits, axis=-1)  # float32
    return jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v), probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention_core(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    """``softmax(q k^T * scale) v`` on ``[B, heads, N, head_dim]`` (logits and softmax in float32).

    The hand-written backward pass (``dv = p^T do``, ``ds = p * (do v^T - rowsum(do v^T * p))``,
    ``dq = ds k * scale``, ``dk = ds^T q * scale``) reuses the saved probabilities; it is the same
    algebra as autodiff but about 25% cheaper on XLA:CPU (stage-3 shapes, 2 cores).
    """
    return _attention_forward(q, k, v, scale)[0]


def _attention_core_fwd(q, k, v, scale):
    out, probs = _attention_forward(q, k, v, scale)
    return out, (q, k, v, probs)


def _attention_core_bwd(scale, residuals, d_out):
    q, k, v, probs = residuals
    dv = jnp.einsum("bhqk,bhqd->bhkd", probs.astype(d_out.dtype), d_out)
    dp = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=jnp.float32)
    ds = probs * (dp - jnp.sum(dp * probs, axis=-1, keepdims=True))
    if scale != 1.0:
        ds = ds * scale
    dq = jnp.einsum("bhqk,bhkd->bhqd", ds.astype(k.dtype), k)
    dk = jnp.einsum("bhqk,bhqd->bhkd", ds.astype(q.dtype), q)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


attention_core.defvjp(_attention_core_fwd, _attention_core_bwd)


ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")


def resolve_attention(impl: str, dtype: Any, head_dim: int, backend: str | None = None) -> str:
    """The attention kernel for ``impl`` on ``backend`` (default: JAX's default backend).

    - ``'einsum'``: :func:`attention_core`, two einsums and a float32 softmax with a hand-written
      backward pass (the fastest measured on XLA:CPU).
    - ``'xla'``: ``jax.nn.dot_product_attention(implementation='xla')``, the same algebra as JAX
      writes it (float32 logits and softmax), left to XLA to fuse.
    - ``'cudnn'``: ``jax.nn.dot_product_attention(implementation='cudnn')``, cuDNN's fused
      (flash) attention: CUDA GPUs only, bfloat16 compute, ``head_dim`` a multiple of 8 up to 128.
    - ``'auto'``: ``'einsum'`` on CPU; on GPU ``'cudnn'`` where it applies (bfloat16), else ``'xla'``.
      The GPU choice follows the kernels' design, not a measurement here (``bench/gpu.py`` prints it).

    All compute ``softmax(q k^T * scale) v``; they differ only in rounding (tested on CPU for 'einsum'
    and 'xla'). ValueError when ``'cudnn'`` cannot run here.
    """
    if impl not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {impl!r}")
    backend = backend or jax.default_backend()
    cudnn_ok = jnp.dtype(dtype) == jnp.bfloat16 and head_dim % 8 == 0 and head_dim <= 128
    if impl == "auto":
        if backend != "gpu":
            return "einsum"
        return "cudnn" if cudnn_ok else "xla"
    if impl == "cudnn":
        if backend != "gpu":
            raise ValueError(f"attention='cudnn' needs a CUDA GPU; JAX's backend here is {backend!r}")
        if not cudnn_ok:
            raise ValueError(
                f"attention='cudnn' needs dtype bfloat16 and head_dim a multiple of 8 up to 128 "
                f"(got {jnp.dtype(dtype).name}, head_dim {head_dim}); use 'xla' or 'auto'"
            )
    return impl


def _is_power_of_two(x: float) -> bool:
    m, _ = math.frexp(x)
    return m == 0.5


class Attention(nnx.Module):
    """Multi-head self-attention over tokens ``[B, N, C]`` (qkv Linear(C, 3C), proj Linear(C, C)).

    Like torch, the scale ``head_dim ** -0.5`` multiplies ``q k^T``; when it is a power of two (head_dim
    4, 16, 64, 256, ...) it is applied to ``q`` instead, which gives bit-identical logits for less work.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float,
        *,
        dtype,
        dropout_rng: str,
        rngs: nnx.Rngs,
        impl: str = "auto",
    ):
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.dtype = dtype
        self.impl = resolve_attention(impl, dtype, dim // num_heads)
        linear = dict(kernel_init=_LINEAR_KERNEL_INIT, bias_init=_ZEROS, dtype=dtype, rngs=rngs)
        self.qkv = torch_linear(dim, 3 * dim, **linear)
        self.proj = torch_linear(dim, dim, **linear)
        self.proj_drop = Dropout(dropout, rng=dropout_rng, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        h = self.num_heads
        # channel index of qkv = s*C + head*hd + d, s in (q, k, v)
        qkv = self.qkv(x).reshape(b, n, 3, h, c // h)
        if self.impl != "einsum":  # jax.nn.dot_product_attention takes [B, N, heads, hd]
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            out = jax.nn.dot_product_attention(q, k, v, scale=self.scale, implementation=self.impl)
            return self.proj_drop(self.proj(out.reshape(b, n, c)))
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # [3, B, heads, N, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = self.scale
        if _is_power_of_two(scale):
            q, scale = q * jnp.asarray(scale, q.dtype), 1.0
        out = attention_core(q, k, v, scale)  # [B, heads, N, hd]
        out = out.transpose(0, 2, 1, 3).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class Mlp(nnx.Module):
    """Token MLP: fc1 -> GELU -> Dropout -> fc2 -> Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float, *, dtype, dropout_rng: str, rngs: nnx.Rngs):
        linear = dict(kernel_init=_LINEAR_KERNEL_INIT, bias_init=_ZEROS, dtype=dtype, rngs=rngs)
        self.fc1 = torch_linear(dim, hidden, **linear)
        self.fc2 = torch_linear(hidden, dim, **linear)
        self.drop = Dropout(dropout, rng=dropout_rng, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.drop(self.fc2(self.drop(_gelu(self.fc1(x)))))


class SABlock(nnx.Module):
    """Self-attention UniFormer block (stages 3-4): ``x += pos_embed(x)`` (depthwise 3x3x3), then a
    pre-LayerNorm (eps 1e-6) transformer block on the ``T*H*W`` tokens (t-major, then h, then w)."""

    def __init__(self, dim: int, num_heads: int, cfg: UniFormerConfig, drop_path: float, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.pos_embed = Conv3d(dim, dim, 3, padding=1, groups=dim, impl=cfg.depthwise, dtype=dt, rngs=rngs)
        self.norm1 = _layer_norm(dim, 1e-6, dt, rngs)
        self.attn = Attention(
            dim, num_heads, cfg.dropout, dtype=dt, dropout_rng=cfg.dropout_rng, rngs=rngs, impl=cfg.attention
        )
        self.drop_path = DropPath(drop_path, rngs=rngs)
        self.norm2 = _layer_norm(dim, 1e-6, dt, rngs)
        self.mlp = Mlp(
            dim, int(dim * cfg.mlp_ratio), cfg.dropout, dtype=dt, dropout_rng=cfg.dropout_rng, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.pos_embed(x)
        b, t, h, w, c = x.shape
        tokens = x.reshape(b, t * h * w, c)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens)))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.reshape(b, t, h, w, c)


def _run_stage(patch_embed: PatchEmbed, pos_drop: Dropout | None, blocks: nnx.List, x: jax.Array):
    x = patch_embed(x)
    embedded = x
    if pos_drop is not None:
        x = pos_drop(x)
    for blk in blocks:
        x = blk(x)
    return x, embedded


_run_stage_remat = nnx.remat(_run_stage)


class UniFormer(nnx.Module):
    """UniFormer video backbone.

    ``__call__(x)`` takes ``x`` ``[B, T, H, W, in_chans]`` (normalised pixels) and returns the pooled
    embedding ``[B, dims[-1]]`` (float32): the mean over T, H, W of the final BatchNorm's output (the
    second value the official ``forward`` returns, the feature CoReEcho uses). With
    ``return_features=True`` it returns ``(pooled, features)`` where ``features`` maps
    ``patch_embed1..4`` (after each LayerNorm), ``stage1..4`` (after the last block of each stage) and
    ``final_norm`` to channels-last arrays. ``logits(pooled)`` applies the classifier when
    ``config.num_classes`` is set. Train/eval mode follows ``model.train()`` / ``model.eval()``.
    """

    def __init__(self, config: UniFormerConfig, *, rngs: nnx.Rngs):
        cfg = config
        self.config = cfg
        dt = cfg.compute_dtype
        d = cfg.dims
        imp = cfg.depthwise
        self.patch_embed1 = PatchEmbed(
            cfg.in_chans, d[0], (3, 4, 4), (2, 4, 4), (1, 0, 0), impl=imp, dtype=dt, rngs=rngs
        )
        self.patch_embed2 = PatchEmbed(d[0], d[1], (1, 2, 2), (1, 2, 2), 0, impl=imp, dtype=dt, rngs=rngs)
        self.patch_embed3 = PatchEmbed(d[1], d[2], (1, 2, 2), (1, 2, 2), 0, impl=imp, dtype=dt, rngs=rngs)
        self.patch_embed4 = PatchEmbed(d[2], d[3], (1, 2, 2), (1, 2, 2), 0, impl=imp, dtype=dt, rngs=rngs)
        self.pos_drop = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)
        total = sum(cfg.depth)
        dpr = [cfg.drop_path * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        offs = [sum(cfg.depth[:i]) for i in range(4)]
        heads = cfg.num_heads
        self.blocks1 = nnx.List([CBlock(d[0], cfg, dpr[offs[0] + i], rngs=rngs) for i in range(cfg.depth[0])])
        self.blocks2 = nnx.List([CBlock(d[1], cfg, dpr[offs[1] + i], rngs=rngs) for i in range(cfg.depth[1])])
        self.blocks3 = nnx.List(
            [SABlock(d[2], heads[2], cfg, dpr[offs[2] + i], rngs=rngs) for i in range(cfg.depth[2])]
        )
        self.blocks4 = nnx.List(
            [SABlock(d[3], heads[3], cfg, dpr[offs[3] + i], rngs=rngs) for i in range(cfg.depth[3])]
        )
        self.norm = BatchNorm(d[3], unbiased_running_var=cfg.unbiased_running_var, dtype=dt)
        if cfg.num_classes is not None:
            self.head = torch_linear(
                d[3], cfg.num_classes, kernel_init=_LINEAR_KERNEL_INIT, bias_init=_ZEROS, rngs=rngs
            )
        else:
            self.head = nnx.data(None)

    def __call__(self, x: jax.Array, *, return_features: bool = False):
        cfg = self.config
        if x.ndim != 5 or x.shape[-1] != cfg.in_chans:
            raise ValueError(
                f"UniFormer expects channels-last clips [B, T, H, W, {cfg.in_chans}], got shape {x.shape}"
            )
        if x.shape[1] < 1 or x.shape[2] < 32 or x.shape[3] < 32:
            raise ValueError(f"UniFormer needs at least 1 frame and 32x32 pixels, got shape {x.shape}")
        x = x.astype(cfg.compute_dtype)
        run = _run_stage_remat if cfg.remat else _run_stage
        features: dict[str, jax.Array] = {}
        stages = (
            (self.patch_embed1, self.pos_drop, self.blocks1),
            (self.patch_embed2, None, self.blocks2),
            (self.patch_embed3, None, self.blocks3),
            (self.patch_embed4, None, self.blocks4),
        )
        for i, (pe, drop, blocks) in enumerate(stages, start=1):
            x, embedded = run(pe, drop, blocks, x)
            features[f"patch_embed{i}"] = embedded
            features[f"stage{i}"] = x
        x = self.norm(x)
        features["final_norm"] = x
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return (pooled, features) if return_features else pooled

    def logits(self, pooled: jax.Array) -> jax.Array:
        """Classifier logits ``[B, num_classes]`` from the pooled embedding ``[B, dims[-1]]``."""
        if self.head is None:
            raise ValueError("this UniFormer has no classifier head (config.num_classes is None)")
        return self.head(pooled)


def count_params(model: nnx.Module) -> int:
    """Number of scalar ``nnx.Param`` values in ``model`` (works on abstract models too)."""
    return sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def stage_shapes(
    config: UniFormerConfig, frames: int, height: int, width: int
) -> list[tuple[int, int, int, int]]:
    """Per-stage ``(T, H, W, C)`` for a clip of the given size (T halves once, H and W floor-halve)."""
    t = (frames + 2 - 3) // 2 + 1
    h, w = height // 4, width // 4
    out = [(t, h, w, config.dims[0])]
    for c in config.dims[1:]:
        h, w = h // 2, w // 2
        out.append((t, h, w, c))
    return out


__all__: Sequence[str] = (
    "UniFormerConfig",
    "PRESETS",
    "uniformer_config",
    "UniFormer",
    "PatchEmbed",
    "CBlock",
    "SABlock",
    "Attention",
    "Mlp",
    "CMlp",
    "count_params",
    "stage_shapes",
)
