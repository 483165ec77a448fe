"""Prompts per window: split a text into window prompts, read a ``.txt`` file, assign prompts to windows, and
encode each distinct prompt once.

One prompt serves every window. With as many prompts as windows, window ``k`` gets prompt ``k``; the speech of
each window goes in its own ``<S>...<E>``. Fewer prompts than windows: the prompts are spread over the clip by
time, prompt ``i`` of ``P`` covering the ``i``-th ``1/P`` of it, and each window takes the prompt of the time at
the middle of its span (3 prompts over 6 windows: 1, 1, 2, 2, 3, 3). More prompts than windows: an error that
says how many windows the clip has. :func:`describe_prompt_plan` writes the window -> prompt plan as text.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from ovi_core import sizes
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
    bad = next((p for p in prompts if any(ord(c) < 32 and c not in "\t\n\r" for c in p)), None)
    if bad is not None:
        code = next(ord(c) for c in bad if ord(c) < 32 and c not in "\t\n\r")
        raise ValueError(f"prompt file {path!r} holds control character {code:#04x}; it is not a text file (or it is "
                         "damaged): give a plain UTF-8 text file, one prompt per line")
    return prompts


def window_centres(plan) -> list[float]:
    """The middle of each window of a :class:`~ovi_core.longclip.plan.WindowPlan` as a fraction of the clip (the
    last window's span is cut at the clip's end)."""
    return [(w.frame_start + min(w.frame_start + plan.window_frames, plan.frames)) / 2 / plan.frames
            for w in plan.windows]


def prompts_for_windows(prompts: Sequence[str], windows: int, *, plan=None) -> list[str]:
    """One prompt per window (see the module docstring). ``plan``: the clip's
    :class:`~ovi_core.longclip.plan.WindowPlan`, whose window times spread the prompts (without it the windows are
    taken as evenly spaced). Raises ``ValueError`` for no prompt or too many."""
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ValueError("no prompt given: describe the scene, speech in <S>...<E>, the sound as 'Audio: ...'")
    if len(prompts) > windows:
        raise ValueError(f"{len(prompts)} prompts for a clip of {windows} window(s); give at most {windows} "
                         "(one per window) or make the clip longer")
    if plan is not None and plan.num_windows != windows:
        raise ValueError(f"the plan has {plan.num_windows} windows, not {windows}")
    if len(prompts) in (1, windows):
        return [prompts[0]] * windows if len(prompts) == 1 else list(prompts)
    centres = window_centres(plan) if plan is not None else [(k + 0.5) / windows for k in range(windows)]
    picks = [min(len(prompts) - 1, int(c * len(prompts))) for c in centres]
    logger.info("%d prompts for %d windows, spread by time: windows -> prompts %s", len(prompts), windows,
                ", ".join(f"{k + 1}->{i + 1}" for k, i in enumerate(picks)))
    return [prompts[i] for i in picks]


def describe_prompt_plan(plan, window_prompts: Sequence[str], *, width: int = 60) -> str:
    """One line per window: its time span in the clip and the start of its prompt (what the node shows)."""
    fps = sizes.FPS
    numbers: dict[str, int] = {}
    lines = []
    for w, p in zip(plan.windows, window_prompts, strict=True):
        n = numbers.setdefault(p, len(numbers) + 1)
        a, b = w.frame_start / fps, min(w.frame_start + plan.window_frames, plan.frames) / fps
        text = " ".join(p.split())
        short = text if len(text) <= width else text[: width - 3].rstrip() + "..."
        lines.append(f"window {w.index + 1} ({a:.2f}-{b:.2f} s): prompt {n}: {short}")
    return "\n".join(lines)


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
