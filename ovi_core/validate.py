"""Checks of user input that need no weights: run them before anything heavy (loading, encoding, sampling).

One module so that the CLI, :class:`ovi_core.pipeline.OviPipeline` and the ComfyUI nodes refuse the same
things with the same messages. Every check raises ``ValueError`` (or ``FileNotFoundError`` for a missing
file) saying what to do, and returns the normalised value where there is one.
"""

from __future__ import annotations

import os


def check_filename_prefix(prefix: str, *, output_dir: str | None = None) -> None:
    """A ComfyUI ``filename_prefix``: a relative name that stays inside the output folder.

    Refuses absolute paths, drive letters, ``..`` components and NUL characters; with ``output_dir`` also
    resolves symbolic links, so a link inside the output folder that points elsewhere is refused too.
    Raises ``ValueError``; returns None.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"filename_prefix must be a string, got {type(prefix).__name__}.")
    text = prefix.strip()
    hint = "; use a relative name such as 'Ovi/clip'"
    if "\x00" in text:
        raise ValueError(f"filename_prefix {prefix!r} contains a NUL character{hint}.")
    parts = text.replace("\\", "/").split("/")
    if os.path.isabs(text) or text.startswith(("/", "\\")) or ":" in text:
        raise ValueError(f"filename_prefix {prefix!r} is an absolute path or has a drive; it must stay inside the "
                         f"output folder{hint}.")
    if ".." in parts:
        raise ValueError(f"filename_prefix {prefix!r} contains '..'; it must stay inside the output folder{hint}.")
    if output_dir is not None:
        root = os.path.realpath(output_dir)
        target = os.path.realpath(os.path.join(root, *[p for p in parts if p]))
        if os.path.commonpath((root, target)) != root:
            raise ValueError(f"filename_prefix {prefix!r} leads outside the output folder {output_dir!r} "
                             f"(through a symbolic link){hint}.")
