"""Atomic file writing: a file appears complete under its name, or not at all.

Every writer of the project (MP4/WAV, LoRA, checkpoints, cached latents) goes through :func:`atomic_path`,
so an interrupted or failed run never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success, delete it on any failure.

    The temporary name is hidden (starts with ``.``) and ends with ``.part<suffix>`` (keep ``suffix`` equal to
    the real extension where a writer picks its format from it). The final file gets the usual permissions
    (``0666`` less the umask), not ``mkstemp``'s ``0600``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
