"""``filename_prefix`` substitutions, the ones ComfyUI's own save nodes offer.

ComfyUI's frontend expands ``%date:FORMAT%`` and ``%Node.widget%`` only for the core save nodes (a fixed list of
node types), and the server's ``get_save_image_path`` expands ``%width%``, ``%height%``, ``%year%``, ``%month%``,
``%day%``, ``%hour%``, ``%minute%`` and ``%second%``. A custom save node therefore receives the raw text; this
module expands all of them the same way, so ``Ovi/%date:yyyy-MM-dd%/clip_%width%x%height%`` names a file as it
would for ``SaveImage``.

``%date:FORMAT%`` tokens (as the frontend's): ``yyyy`` full year, ``yy`` two-digit year, ``M``/``MM`` month,
``d``/``dd`` day, ``h``/``hh`` hour (0-23), ``m``/``mm`` minute, ``s``/``ss`` second (a doubled letter pads to two
digits); anything else is kept. ``%Title.widget%`` takes the value of a widget of another node of the prompt (the
node whose title or class is ``Title``), with ``/ ? < > \\ : * | "`` and control characters replaced by ``_``
as the frontend does. Unknown ``%...%`` texts are kept unchanged.
"""

from __future__ import annotations

import re
import time

_TOKEN = re.compile(r"%([^%]+)%")
_DATE = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")
_UNSAFE = re.compile(r'[/?<>\\:*|"\x00-\x1F\x7F]')


def format_date(fmt: str, now: time.struct_time) -> str:
    """``fmt`` with the frontend's date tokens replaced (see the module text)."""
    fields = {"d": now.tm_mday, "M": now.tm_mon, "h": now.tm_hour, "m": now.tm_min, "s": now.tm_sec}

    def one(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "yy":
            return str(now.tm_year)[2:]
        if tok == "yyyy":
            return str(now.tm_year)
        if tok[0] in fields:
            return str(fields[tok[0]]).zfill(len(tok))
        return tok

    return _DATE.sub(one, fmt)


def _widget_value(prompt: dict | None, node: str, widget: str) -> str | None:
    """The value of ``widget`` on the node titled (or of class) ``node`` in an API ``prompt``; None if absent."""
    if not isinstance(prompt, dict):
        return None
    entries = [e for e in prompt.values() if isinstance(e, dict)]
    matches = [e for e in entries if (e.get("_meta") or {}).get("title") == node]
    matches = matches or [e for e in entries if e.get("class_type") == node]
    for e in matches[:1]:
        value = (e.get("inputs") or {}).get(widget)
        if value is None or isinstance(value, (list, dict)):  # a link: no value before running
            return None
        return _UNSAFE.sub("_", str(value))
    return None


def expand_prefix(prefix: str, *, width: int = 0, height: int = 0, now: time.struct_time | None = None,
                  prompt: dict | None = None) -> str:
    """``prefix`` with ComfyUI's save-node substitutions applied (module text); plain text is returned as is."""
    if "%" not in prefix:
        return prefix
    now = now or time.localtime()
    simple = {
        "width": str(int(width)), "height": str(int(height)), "year": str(now.tm_year),
        "month": str(now.tm_mon).zfill(2), "day": str(now.tm_mday).zfill(2), "hour": str(now.tm_hour).zfill(2),
        "minute": str(now.tm_min).zfill(2), "second": str(now.tm_sec).zfill(2),
    }

    def one(m: re.Match) -> str:
        body = m.group(1)
        if body in simple:
            return simple[body]
        if body.startswith("date:"):
            return format_date(body[5:], now)
        parts = body.split(".")
        if len(parts) == 2:
            value = _widget_value(prompt, parts[0], parts[1])
            if value is not None:
                return value
        return m.group(0)

    return _TOKEN.sub(one, prefix)
