"""Prompts per window: split a text into window prompts, read a ``.txt`` file, assign prompts to windows, and
encode each distinct prompt once.

One prompt serves every window. With several, window ``k`` gets prompt ``k``; the speech of each window goes in
its own ``<S>...<E>``. Fewer prompts than windows: the last prompt carries on for the remaining windows (logged);
more prompts than windows: an error that says how many windows the clip has.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from ovi_core.io.files import regular_file

logger = logging.getLogger(__name__)

SEPARATOR = re.compile(r"^\s*---+\s*$", re.MULTILINE)


def split_prompts(text: str) -> list[str]:
    """Window prompts from one text: blocks separated by lines of ``---`` when there is such a line, else one
    prompt per non-empty line. Lines starting with ``#`` are comments."""
    if not isinstance(text, str):
        raise ValueError("prompts must be text")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    body = "\n".join(lines)
    if SEPARATOR.search(body):
        parts = [" ".join(p.split()) for p in SEPARATOR.split(body)]
    else:
        parts = [ln.strip() for ln in lines]
    return [p for p in parts if p]


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """The window prompts of a ``.txt`` file (see :func:`split_prompts`)."""
    path = regular_file(path, "prompt file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            prompts = split_prompts(f.read())
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt file {path!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at position "
                         f"{e.start}); save it as UTF-8 (e.g. 'iconv -f latin1 -t utf-8') and try again") from None
    if not prompts:
        raise ValueError(f"{path!r} has no prompts: write one prompt per line (or blocks separated by '---')")
    return prompts


def prompts_for_windows(prompts: Sequence[str], windows: int) -> list[str]:
    """One prompt per window (see the module docstring). Raises ``ValueError`` for no prompt or too many."""
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ValueError("no prompt given: describe the scene, speech in <S>...<E>, the sound as 'Audio: ...'")
    if len(prompts) > windows:
        raise ValueError(f"{len(prompts)} prompts for a clip of {windows} window(s); give at most {windows} "
                         "(one per window) or make the clip longer")
    if 1 < len(prompts) < windows:
        logger.warning("%d prompts for %d windows: the last prompt is used for windows %d-%d", len(prompts),
                       windows, len(prompts) + 1, windows)
    return list(prompts) + [prompts[-1]] * (windows - len(prompts))


def encode_window_prompts(text_encoder, prompts: Sequence[str], *, video_negative: str, audio_negative: str,
                          version: str | None) -> list:
    """``Conditioning`` per window (CPU); every distinct prompt is encoded once."""
    from ovi_core.text.conditioning import encode_prompts

    cache: dict[str, object] = {}
    out = []
    for p in prompts:
        if p not in cache:
            cache[p] = encode_prompts(text_encoder, p, video_negative=video_negative, audio_negative=audio_negative,
                                      version=version).to("cpu")
        out.append(cache[p])
    return out
