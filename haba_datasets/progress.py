"""Progress bars on tqdm's conventions: off when ``TQDM_DISABLE`` is set, quiet off a terminal."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*args, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(*args, **kwargs)`` shown only when ``enabled``, ``TQDM_DISABLE`` is unset (read now,
    not at import) and the bar's stream is a terminal (``disable=None``)."""
    off = not enabled or bool(os.environ.get("TQDM_DISABLE"))
    return tqdm(*args, disable=True if off else None, **kwargs)
