"""Where ``from_pretrained``'s name points: a local folder, else a Hugging Face Hub snapshot.

A name that exists on disk is a local folder and nothing is fetched. Otherwise a name shaped
``owner/name`` is a Hub model repository, fetched with ``huggingface_hub.snapshot_download`` (optional:
``pip install huggingface_hub``) into its cache, limited to the files of a weights folder
(:data:`~coreecho_jax.inference.weights_folder.FILES`). Offline (``local_files_only=True``, or
``HF_HUB_OFFLINE=1``, whatever ``local_files_only`` says) only the cache is read: no network call, and a
snapshot not in the cache is one line saying so. ``revision`` pins a branch, tag or commit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from coreecho_jax.inference.weights_folder import FILES, WeightsError

#: A Hub model id: ``owner/name`` (letters, digits, ``-``, ``_``, ``.``).
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TRUE = {"1", "on", "yes", "true"}


def offline_from_env() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network (``1``, ``ON``, ``YES``, ``TRUE``, any case), as
    huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve(
    name: str | Path,
    revision: str | None = None,
    *,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, str]:
    """``(folder, label)``: the local folder ``name`` names, or the cached snapshot of a Hub id (fetched
    first unless offline); ``label`` is the folder, or ``owner/name@revision``.

    Raises:
        WeightsError: a local path that does not exist and is no Hub id; a revision given for a local
            folder; no ``huggingface_hub`` for a Hub id; a snapshot not cached while offline; a Hub error.
    """
    path = Path(name).expanduser()
    if path.exists():
        if revision is not None:
            raise WeightsError(
                f"{path}: a local folder has no revision (revision={revision!r} is for a Hub id)"
            )
        return path, str(path)
    if not HUB_ID.fullmatch(str(name)):
        raise WeightsError(f"{name}: no such folder, and not a Hugging Face Hub id (owner/name)")
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError(
            f"{name}: no such folder; to read it as a Hugging Face Hub id: pip install huggingface_hub"
        ) from None
    offline = offline_from_env() or bool(local_files_only)  # HF_HUB_OFFLINE=1 always means no network
    label = f"{name}@{revision}" if revision else str(name)
    try:
        folder = huggingface_hub.snapshot_download(
            str(name),
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            local_files_only=offline,
            allow_patterns=list(FILES),
        )
    except huggingface_hub.errors.LocalEntryNotFoundError:
        if offline:
            raise WeightsError(
                f"{label}: not in the Hugging Face cache, and offline (HF_HUB_OFFLINE=1 or "
                f"local_files_only=True): fetch it once online, or give a local folder"
            ) from None
        raise WeightsError(f"{label}: the Hub could not be reached and the snapshot is not cached") from None
    except OSError as e:  # huggingface_hub's HTTP errors (repository or revision not found, ...) are OSErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{label}: {type(e).__name__}: {first}") from None
    return Path(folder), label
