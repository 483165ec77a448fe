"""Atomic file writing: a file appears complete under its name, or not at all.

Every writer of the project (MP4/WAV, LoRA, checkpoints, cached latents) goes through :func:`atomic_path`,
so an interrupted or failed run never leaves a partial file behind. An interrupt is Ctrl-C (SIGINT, which
Python raises as ``KeyboardInterrupt``) or SIGTERM (what ``kill``, ``timeout`` and job schedulers send):
while a write is in progress in the main thread, SIGTERM is turned into ``SystemExit(143)`` so that the
same clean-up runs, and the process still exits with the status of a SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator

_sigterm_lock = threading.Lock()
_sigterm_depth = 0  # atomic writes in progress in the main thread
_sigterm_previous = None  # the SIGTERM handler before the outermost write


class Terminated(SystemExit):
    """SIGTERM arrived during an atomic write; the partial file has been removed. Exit status 128 + 15."""


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001  (signal handler signature)
    raise Terminated(128 + signum)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within this block (in the main thread) SIGTERM raises :class:`Terminated` instead of killing the process
    outright, so ``finally``/``except`` clean-ups run. A handler installed by someone else is left alone, as is
    any thread but the main one (Python delivers signals to the main thread only). Re-entrant."""
    global _sigterm_depth, _sigterm_previous
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _sigterm_lock:
        if _sigterm_depth == 0:
            current = signal.getsignal(signal.SIGTERM)
            if current in (signal.SIG_DFL, None):
                _sigterm_previous = current
                signal.signal(signal.SIGTERM, _on_sigterm)
            else:
                _sigterm_previous = False  # not ours: leave it
        _sigterm_depth += 1
    try:
        yield
    finally:
        with _sigterm_lock:
            _sigterm_depth -= 1
            if _sigterm_depth == 0 and _sigterm_previous is not False:
                signal.signal(signal.SIGTERM, _sigterm_previous or signal.SIG_DFL)
                _sigterm_previous = None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success, delete it on any failure,
    Ctrl-C or SIGTERM.

    The temporary name is hidden (starts with ``.``) and ends with ``.part<suffix>`` (keep ``suffix`` equal to
    the real extension where a writer picks its format from it). The final file gets the usual permissions
    (``0666`` less the umask), not ``mkstemp``'s ``0600``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist; create it first")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a folder")
    # keep the temporary name within the 255-byte limit of a file name, even for a long final name
    prefix = f".{os.path.basename(path)[:200]}."
    umask = os.umask(0)
    os.umask(umask)
    tmp = None
    with sigterm_as_exit():
        try:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".part{suffix}", dir=folder)
            os.close(fd)
            yield tmp
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
            raise


def regular_file(path: str | os.PathLike, what: str = "file") -> str:
    """``path`` as a string when it names a regular file (or a link to one) that can be read.

    A missing path raises ``FileNotFoundError``; a folder, a FIFO, a socket or a device raises ``ValueError``
    (opening a FIFO would wait forever for a writer); each message names ``what`` and the path and says what
    to give instead. Nothing is opened.
    """
    import stat

    p = os.fspath(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {p!r}; check the path.") from None
    except OSError as e:
        raise ValueError(f"{what} {p!r} cannot be read ({e.strerror or e}); check the path and its permissions.") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{what} {p!r} is a folder; give a file inside it.")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ValueError(f"{what} {p!r} is {kind}, not a regular file; save the data to a file and give that.")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{what} {p!r} is not readable (permission denied); fix its permissions.")
    return p
