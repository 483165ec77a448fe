"""Ovi prompt format: speech in ``<S>…<E>``, an audio caption as ``<AUDCAP>…<ENDAUDCAP>`` (Ovi 1.0) or a
trailing ``Audio: …`` (Ovi 1.1), everything else describes the video.

The tags are plain text to the tokenizer; when they are wrong, users report that the model speaks the
whole prompt. :func:`check_prompt` explains such mistakes; :func:`convert_prompt` rewrites the caption
between the two formats with the official regular expressions.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from typing import Literal

S_OPEN, S_CLOSE = "<S>", "<E>"
CAP_OPEN, CAP_CLOSE = "<AUDCAP>", "<ENDAUDCAP>"
AUDIO_PREFIX = "Audio:"

# The official conversions (Ovi inference engine), applied to the whole prompt.
_TO_V10 = re.compile(r"Audio:\s*(.*)", re.S)
_TO_V11 = re.compile(r"<AUDCAP>(.*?)<ENDAUDCAP>", re.S)

_SPEECH = re.compile(r"<S>(.*?)<E>", re.S)
_TAG = re.compile(r"<(S|E|AUDCAP|ENDAUDCAP)>")
# tag look-alikes: wrong case, closing slash, inner spaces (e.g. <s>, </S>, < S >, </AUDCAP>, <AudCap>)
_TAG_LIKE = re.compile(r"<\s*/?\s*(s|e|audcap|endaudcap|end\s*audcap)\s*/?\s*>", re.I)

PromptFormat = Literal["1.0", "1.1"]


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into its parts.

    ``video_text`` is the prompt without the speech spans and without the audio caption (what the
    official ``clean_text`` keeps), whitespace collapsed.
    """

    speech: list[str] = field(default_factory=list)
    audio_caption: str | None = None
    video_text: str = ""
    format: PromptFormat | None = None


# DreamID-Omni's structured captions (reference mode) describe the sound in this section instead
DREAMID_AUDIO = "[AUDIO_DESCRIPTION_START]"

def _normalize_version(version: str) -> PromptFormat:
    v = str(version).strip().lower().lstrip("v")
    if v.startswith("1.0") or v in ("1", "720x720_5s"):
        return "1.0"
    if v.startswith("1.1") or v in ("960x960_5s", "960x960_10s"):
        return "1.1"
    raise ValueError(f"Unknown Ovi version {version!r}; use '1.0' (<AUDCAP> captions) or '1.1' ('Audio:' captions).")


def convert_prompt(text: str, *, version: str) -> str:
    """Rewrite the audio caption for a model version, exactly as the official engine does.

    ``version='1.0'``: ``Audio: X`` (to the end of the prompt) becomes ``<AUDCAP>X<ENDAUDCAP>``.
    ``version='1.1'``: every ``<AUDCAP>X<ENDAUDCAP>`` becomes ``Audio: X``.
    Prompts already in the target format are returned unchanged. Accepts '1.0', '1.1', '1.1-10s' or a
    model name such as '960x960_10s'.
    """
    v = _normalize_version(version)
    if v == "1.0":
        return _TO_V10.sub(r"<AUDCAP>\1<ENDAUDCAP>", text)
    return _TO_V11.sub(r"Audio: \1", text)


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_prompt(text: str) -> ParsedPrompt:
    """Split a prompt into speech lines, audio caption and video description (never raises)."""
    speech = [_collapse(m) for m in _SPEECH.findall(text)]
    fmt: PromptFormat | None = None
    caption: str | None = None
    rest = text
    caps = _TO_V11.findall(text)
    if caps:
        fmt = "1.0"
        caption = _collapse(" ".join(caps))
        rest = _TO_V11.sub(" ", rest)
    else:
        m = _TO_V10.search(text)
        if m:
            fmt = "1.1"
            caption = _collapse(m.group(1))
            rest = rest[: m.start()]
    rest = _SPEECH.sub(" ", rest)
    return ParsedPrompt(speech=speech, audio_caption=caption, video_text=_collapse(rest), format=fmt)


def _check_pairs(text: str, open_tag: str, close_tag: str, what: str) -> list[str]:
    """Walk the tags in order and report stray, nested and empty spans."""
    warnings: list[str] = []
    depth = 0
    start = 0
    for m in _TAG.finditer(text):
        tag = m.group(0)
        if tag == open_tag:
            if depth:
                warnings.append(
                    f"{what}: '{open_tag}' at character {m.start()} opens again before the previous one is closed "
                    f"with '{close_tag}' (nested or missing '{close_tag}')."
                )
            depth += 1
            start = m.end()
        elif tag == close_tag:
            if depth == 0:
                warnings.append(f"{what}: stray '{close_tag}' at character {m.start()} without an opening '{open_tag}'.")
                continue
            if depth == 1 and not text[start : m.start()].strip():
                warnings.append(f"{what}: empty '{open_tag}{close_tag}' at character {m.start()}.")
            depth -= 1
    if depth:
        warnings.append(
            f"{what}: '{open_tag}' is never closed with '{close_tag}'; the rest of the prompt may be spoken or "
            "mixed into the audio."
        )
    return warnings


MIXED_CAPTIONS = "The prompt has both an <AUDCAP>…<ENDAUDCAP> caption (Ovi 1.0) and 'Audio:' (Ovi 1.1); use one."


def mixed_caption_warning(text: str) -> str | None:
    """The warning for a prompt that uses both caption formats (``<AUDCAP>`` and ``Audio:``), else None.

    Check the prompt as the user wrote it: converting it to a model's format makes the two look like one.
    """
    has_cap = CAP_OPEN in text or CAP_CLOSE in text
    return MIXED_CAPTIONS if has_cap and AUDIO_PREFIX in text else None


def check_prompt(text: str, *, version: str | None = None) -> list[str]:
    """Human-readable warnings about the prompt format (an empty list when it looks right).

    Checks: empty prompt; unbalanced, nested, stray or empty ``<S>…<E>`` and ``<AUDCAP>…<ENDAUDCAP>``;
    look-alike tags (lower case, ``</S>``, spaces); missing speech or audio caption; both caption formats;
    ``Audio:`` that is not at the end (speech after it would become part of the caption); speech tags inside
    the audio caption. With ``version`` it also says when the caption will be converted.
    """
    warnings: list[str] = []
    if not text or not text.strip():
        return ["The prompt is empty."]

    for m in _TAG_LIKE.finditer(text):
        if _TAG.fullmatch(m.group(0)):
            continue
        warnings.append(
            f"'{m.group(0)}' at character {m.start()} is not an Ovi tag; tags are exactly <S>, <E>, <AUDCAP>, "
            "<ENDAUDCAP> (upper case, no slash or spaces). The model may speak the whole prompt otherwise."
        )
    for m in re.finditer(r"\baudio\s*:", text, re.I):
        if m.group(0) != AUDIO_PREFIX:
            warnings.append(f"'{m.group(0)}' at character {m.start()}: the Ovi 1.1 caption prefix is exactly 'Audio:'.")

    warnings += _check_pairs(text, S_OPEN, S_CLOSE, "Speech")
    warnings += _check_pairs(text, CAP_OPEN, CAP_CLOSE, "Audio caption")

    has_cap = CAP_OPEN in text or CAP_CLOSE in text
    audio_at = [m.start() for m in re.finditer(re.escape(AUDIO_PREFIX), text)]
    mixed = mixed_caption_warning(text)
    if mixed is not None:
        warnings.append(mixed)
    if len(audio_at) > 1:
        warnings.append("'Audio:' appears more than once; only one trailing audio caption is expected.")
    if audio_at:
        tail = text[audio_at[0] :]
        if S_OPEN in tail or S_CLOSE in tail:
            warnings.append(
                "Speech tags appear after 'Audio:'. 'Audio: …' must come last: everything after it is the audio "
                "caption (and becomes <AUDCAP>…<ENDAUDCAP> for Ovi 1.0)."
            )
        elif not tail[len(AUDIO_PREFIX) :].strip():
            warnings.append("'Audio:' is followed by nothing; describe the sound after it.")
    for cap in _TO_V11.findall(text):
        if S_OPEN in cap or S_CLOSE in cap:
            warnings.append("Speech tags <S>…<E> inside the audio caption; put the spoken words in the scene text.")

    if S_OPEN not in text and S_CLOSE not in text:
        warnings.append(
            "No speech in <S>…<E>. Fine for scenes without dialogue; otherwise put the exact words to be spoken "
            "between <S> and <E>, or the model may speak parts of the description."
        )
    if not has_cap and not audio_at and DREAMID_AUDIO not in text:  # DreamID-Omni's structured caption has its own
        warnings.append(
            "No audio caption: add '<AUDCAP>…<ENDAUDCAP>' (Ovi 1.0) or 'Audio: …' at the end (Ovi 1.1) describing "
            "voices and sounds, or the model may speak the whole prompt."
        )

    if version is not None:
        v = _normalize_version(version)
        fmt = parse_prompt(text).format
        if fmt is not None and fmt != v:
            warnings.append(
                f"The caption is in the Ovi {fmt} format; it will be converted for Ovi {v} "
                f"({'Audio: …' if v == '1.1' else '<AUDCAP>…<ENDAUDCAP>'})."
            )
    return warnings


def read_prompt_csv(path: str | os.PathLike) -> list[tuple[str, str | None]]:
    """Read an official prompt CSV (header ``text_prompt`` and optional ``image_path``); a ``.tsv`` file is
    read the same way with tab-separated columns.

    Returns ``[(prompt, image_path_or_None), ...]``; image paths are returned as written (relative to
    wherever the official repo keeps them).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Prompt file not found: {path!r}.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _read_prompt_rows(f, path, delimiter="\t" if path.lower().endswith(".tsv") else ",")
    except UnicodeDecodeError as e:
        raise ValueError(f"Prompt file {path!r} is not valid UTF-8 ({e.reason}: {e.object[e.start:e.start + 4]!r}); save it as "
                         "UTF-8 text.") from None


def _read_prompt_rows(f, path: str, *, delimiter: str = ",") -> list[tuple[str, str | None]]:
    """The rows of an open prompt CSV/TSV (see :func:`read_prompt_csv`)."""
    reader = csv.DictReader(f, delimiter=delimiter)
    fields = [c.strip() for c in (reader.fieldnames or [])]
    if "text_prompt" not in fields:
        raise ValueError(
            f"{path!r} has columns {fields}; an Ovi prompt CSV needs a 'text_prompt' column "
            "(and optionally 'image_path')."
        )
    out: list[tuple[str, str | None]] = []
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        text = (row.get("text_prompt") or "").strip()
        if not text:
            continue
        image = (row.get("image_path") or "").strip() or None
        out.append((text, image))
    return out


def check_prompt_text(prompt: object) -> str:
    """A non-empty prompt string."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("The prompt is empty. Describe the scene, put speech in <S>...<E> and the sound in "
                         "'Audio: ...' (Ovi 1.1) or <AUDCAP>...<ENDAUDCAP> (Ovi 1.0).")
    return prompt
