"""Counts real calls of the heavy loaders (weights read into a network, a component placed on its device, a LoRA
applied, a file quantized) without replacing them: each wrapper calls the original. Every module attribute that
holds one of these functions is wrapped, so ``from x import f`` bindings are counted too."""

from __future__ import annotations

import collections
import importlib
import sys

HEAVY = (
    ("ovi_core.quant.sources", "iter_load"),  # the fusion DiT, streamed from any format
    ("ovi_core.model.loader", "load_fusion"),
    ("ovi_core.vae.wan_vae", "load_wan_vae"),
    ("ovi_core.audio.codec", "load_audio_codec"),
    ("ovi_core.text.umt5", "load_text_encoder"),
    ("ovi_core.lora.model", "lora_model"),
    ("ovi_core.quant.convert", "quantize_file"),
    ("nodes._patcher", "use"),  # a node places a held component on its device
    ("nodes._patcher", "use_model"),
)


def install(monkeypatch) -> collections.Counter:
    """Wrap the loaders of :data:`HEAVY` for the test; returns the counter (name -> calls)."""
    counts: collections.Counter = collections.Counter()
    for mod_name, attr in HEAVY:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        orig = getattr(mod, attr)

        def wrapper(*a, _orig=orig, _name=f"{mod_name}.{attr}", **k):
            counts[_name] += 1
            return _orig(*a, **k)

        for m in list(sys.modules.values()):
            name = getattr(m, "__name__", "") or ""
            if not (name.startswith(("ovi_core", "nodes")) or m is mod):
                continue
            for key, val in list(vars(m).items()):
                if val is orig:
                    monkeypatch.setattr(m, key, wrapper)
    return counts
