"""The official PyTorch CoReEcho code, timed beside ours in the same run (``--official-repo PATH``).

``PATH`` is a checkout of the official CoReEcho repository (``coreecho/__init__.py`` with
``get_feature_extractor``, ``coreecho/uniformer.py``, ``coreecho/regressor.py`` with
``get_shallow_mlp_head``, ``coreecho/loss.py`` with ``RnCLoss``). Its files are imported from there as
the package ``_coreecho_official``; nothing of it is copied into this project. PyTorch is not a
dependency of this project: it is imported only when a timer is built, and a missing checkout or a
missing PyTorch raises :class:`OfficialUnavailable` naming what is missing.

What is timed (float32, CPU):

* :func:`forward_timer`: UniFormer-S as ``get_feature_extractor('uniformer_small')`` builds it, in
  ``model.eval()`` under ``torch.inference_mode()``, on ``[B, C, T, H, W]`` clips;
* :func:`train_step_timer`: one stage-1 step of ``train_first_stage.py: train``: encoder forward in
  train mode, ``RnCLoss`` on the two views' features, backward, AdamW step; then the regressor
  (``get_shallow_mlp_head``, train mode) on the detached features, L1 to the labels, backward, its
  own AdamW step;
* :func:`rnc_timer`: ``RnCLoss`` forward + backward w.r.t. ``[2N, D]`` features.

Settings: ``torch.set_num_threads(threads)`` with ``threads`` the cores the JAX side uses, and
``torch.set_flush_denormal(True)``. XLA:CPU flushes denormal floats to zero; PyTorch does not by
default, and with fresh random weights its CPU kernels slow down badly on denormal values, which
would inflate the official times for a reason that has nothing to do with the code compared. Every
timer sets both before PyTorch runs its first parallel op, so the intra-op threads, created then,
inherit the flush-to-zero mode (a new thread inherits its creator's floating-point environment).

``timm``: the official ``uniformer.py`` imports ``trunc_normal_``, ``DropPath`` and ``to_2tuple`` from
``timm.models.layers``. timm from PyPI needs a matching torchvision, so when ``timm`` cannot be
imported a minimal in-memory stand-in for ``timm.models.layers`` with exactly those three names
(``torch.nn.init.trunc_normal_``, a per-sample stochastic-depth module, a pair helper) is put into
``sys.modules`` before the official files are imported. ``regressor.py`` and ``loss.py`` import only
``torch``; ``coreecho/__init__.py`` imports ``torch`` and ``.uniformer``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from coreecho_jax.errors import ConfigError

TORCH_REQUIREMENT = "torch==2.13.0"
OFFICIAL_FILES = (
    "coreecho/__init__.py",
    "coreecho/uniformer.py",
    "coreecho/regressor.py",
    "coreecho/loss.py",
)
PACKAGE = "_coreecho_official"
NOT_MEASURED = "not measured (pass --official-repo)"
OFFICIAL = "official"  # the name of the official model's rows / entries in the benchmarks' results


class OfficialUnavailable(ConfigError):
    """The official checkout or PyTorch, needed for ``--official-repo``, is missing."""


def check_repo(path: str | Path) -> Path:
    """The checkout's root, after checking that the official files are there."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise OfficialUnavailable(f"--official-repo {path}: no such directory")
    missing = [name for name in OFFICIAL_FILES if not (root / name).is_file()]
    if missing:
        raise OfficialUnavailable(
            f"--official-repo {path}: no {', '.join(missing)} there (expected a checkout of the "
            "official CoReEcho repository)"
        )
    return root.resolve()


def check_torch() -> None:
    """Raise unless PyTorch can be found (without importing it)."""
    if importlib.util.find_spec("torch") is None:
        raise OfficialUnavailable(f"PyTorch is not installed: pip install {TORCH_REQUIREMENT}")


def check_available(path: str | Path) -> Path:
    """Both checks, cheap enough to run before any benchmark starts."""
    root = check_repo(path)
    check_torch()
    return root


def _import_torch():
    check_torch()
    import torch

    return torch


def _timm_stand_in(torch) -> None:
    """Register ``timm``, ``timm.models`` and ``timm.models.layers`` holding the three names the
    official ``uniformer.py`` imports, unless a working timm is importable."""
    try:
        importlib.import_module("timm.models.layers")
        return
    except Exception:  # missing, or installed without a torchvision that matches this torch
        pass

    class DropPath(torch.nn.Module):
        """Stochastic depth: drop whole samples with probability ``drop_prob`` in train mode."""

        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def to_2tuple(x):
        return tuple(x) if isinstance(x, Iterable) and not isinstance(x, str) else (x, x)

    layers = types.ModuleType("timm.models.layers")
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    layers.DropPath = DropPath
    layers.to_2tuple = to_2tuple
    models = types.ModuleType("timm.models")
    models.layers = layers
    timm = types.ModuleType("timm")
    timm.models = models
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def load_official(path: str | Path) -> types.SimpleNamespace:
    """``torch`` and the official ``get_feature_extractor``, ``get_shallow_mlp_head`` and ``RnCLoss``."""
    root = check_repo(path)
    torch = _import_torch()
    package = sys.modules.get(PACKAGE)
    if package is None or Path(package.__path__[0]) != root / "coreecho":
        _timm_stand_in(torch)
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location(
            PACKAGE, root / "coreecho" / "__init__.py", submodule_search_locations=[str(root / "coreecho")]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return types.SimpleNamespace(
        torch=torch,
        get_feature_extractor=package.get_feature_extractor,
        get_shallow_mlp_head=importlib.import_module(PACKAGE + ".regressor").get_shallow_mlp_head,
        RnCLoss=importlib.import_module(PACKAGE + ".loss").RnCLoss,
    )


def configure(torch, threads: int) -> bool:
    """Set the thread count and flush-to-zero; True when flushing denormals is supported here."""
    torch.set_num_threads(threads)
    return bool(torch.set_flush_denormal(True))


def _clips_ncthw(torch, clips: np.ndarray):
    """``[B, T, H, W, C]`` float32 (our layout) -> the official ``[B, C, T, H, W]`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(clips, (0, 4, 1, 2, 3)), np.float32))


def forward_timer(repo: str | Path, clips: np.ndarray, threads: int, seed: int = 0) -> Callable[[], None]:
    """One eval forward of the official UniFormer-S (``get_feature_extractor``) on ``clips``
    ``[B, T, H, W, C]`` float32, per call."""
    off = load_official(repo)
    torch = off.torch
    configure(torch, threads)
    torch.manual_seed(seed)
    model = off.get_feature_extractor("uniformer_small")
    model.eval()
    x = _clips_ncthw(torch, clips)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def train_step_timer(
    repo: str | Path,
    clips: np.ndarray,
    labels: np.ndarray,
    threads: int,
    temperature: float = 1.0,
    learning_rate: float = 1e-4,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> Callable[[], float]:
    """One stage-1 step of ``train_first_stage.py: train`` per call; returns RnC + L1 loss.

    ``clips`` ``[2N, T, H, W, C]`` float32 are the two views, view-major (rows ``0..N-1`` view 0 of
    videos ``0..N-1``, as the official ``cat([views1, views2])``); ``labels`` ``[N]`` EF in %.
    ``temperature=1.0`` is the ``--temp`` of CoReEcho's training command.
    """
    n_clips = clips.shape[0]
    if n_clips < 2 or n_clips % 2:
        raise ConfigError(
            f"official training step: batch {n_clips} clips; it needs an even number >= 2 (two views "
            "per video)"
        )
    bsz = n_clips // 2
    off = load_official(repo)
    torch = off.torch
    configure(torch, threads)
    torch.manual_seed(seed)
    model = off.get_feature_extractor("uniformer_small")
    regressor = off.get_shallow_mlp_head(model.head.in_features, 1)
    criterion = off.RnCLoss(temperature=temperature, label_diff="l1", feature_sim="l2")
    l1 = torch.nn.L1Loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    optimizer_regressor = torch.optim.AdamW(
        regressor.parameters(), lr=learning_rate, weight_decay=weight_decay
    )
    model.train()
    regressor.train()
    images = _clips_ncthw(torch, clips)
    y = torch.from_numpy(np.asarray(labels, np.float32).reshape(-1)[:bsz].reshape(bsz, 1).copy())

    def step() -> float:
        _, features = model(images)
        f1, f2 = torch.split(features, [bsz, bsz], dim=0)
        features = torch.cat([f1.unsqueeze(1), f2.unsqueeze(1)], dim=1)
        loss = criterion(features, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        features = features.detach()
        loss_reg = l1(regressor(torch.cat((features[:, 0], features[:, 1]), dim=0)), y.repeat(2, 1))
        optimizer_regressor.zero_grad()
        loss_reg.backward()
        optimizer_regressor.step()
        return loss.item() + loss_reg.item()

    return step


def paired_views(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat ``[2N, D]`` features (view-major) and ``[2N]`` / ``[2N, 1]`` labels -> the official layout:
    ``[N, 2, D]`` float32 features (``cat([f[:, 0], f[:, 1]])`` gives the rows back) and the ``[N, 1]``
    labels of the first N rows (the official loss repeats them for the second view)."""
    n, dim = features.shape
    if n < 2 or n % 2:
        raise ConfigError(f"official RnC loss: 2N = {n} rows; it needs an even number >= 2")
    paired = np.asarray(features, np.float32).reshape(2, n // 2, dim).transpose(1, 0, 2)
    y = np.asarray(labels, np.float32).reshape(n, -1)[: n // 2]
    return np.ascontiguousarray(paired), np.ascontiguousarray(y)


def rnc_timer(
    repo: str | Path, features: np.ndarray, labels: np.ndarray, threads: int, temperature: float = 2.0
) -> Callable[[], float]:
    """``RnCLoss`` forward + backward w.r.t. the features per call; returns the loss.

    ``features`` ``[2N, D]`` float32, view-major; ``labels`` ``[2N, 1]``: the official loss takes the
    labels of the ``N`` first rows and repeats them, so rows ``N..2N-1`` get those of rows ``0..N-1``
    (the cost does not depend on the label values).
    """
    off = load_official(repo)
    torch = off.torch
    configure(torch, threads)
    criterion = off.RnCLoss(temperature=temperature, label_diff="l1", feature_sim="l2")
    x, y = (torch.from_numpy(a) for a in paired_views(features, labels))
    x.requires_grad_(True)

    def step() -> float:
        x.grad = None
        loss = criterion(x, y)
        loss.backward()
        return loss.item()

    return step


def rnc_value(repo: str | Path, features: np.ndarray, labels: np.ndarray, temperature: float = 2.0) -> float:
    """The official ``RnCLoss`` of ``features`` ``[N, 2, D]`` and ``labels`` ``[N, 1]`` (its own layout)."""
    off = load_official(repo)
    torch = off.torch
    criterion = off.RnCLoss(temperature=temperature, label_diff="l1", feature_sim="l2")
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(features, np.float32))
        y = torch.from_numpy(np.asarray(labels, np.float32).reshape(features.shape[0], -1))
        return float(criterion(x, y))


def rnc_bytes(n: int) -> int:
    """Peak memory of one official ``RnCLoss`` forward + backward at ``2N = n`` rows, about ``16 n^3``
    bytes: autograd keeps a float32 ``[n, n - 1]`` mask per positive column (``4 n^3`` bytes), and the
    allocator holds about as much again in freed temporaries (peak RSS measured at n = 512: 2.0 GiB)."""
    return 16 * n**3


def ratio(official_s: float | None, ours_s: float | None) -> str:
    """``official / ours`` as ``'1.43x'`` (above 1: ours is faster); ``'-'`` when either is missing."""
    if official_s is None or ours_s is None:
        return "-"
    return f"{official_s / ours_s:.2f}x"
