"""ovi_core: a plain PyTorch implementation of Ovi (twin-backbone audio+video generation).

This package never imports ComfyUI. The public API below is the short list a library user needs; it is loaded
on first use, so ``import ovi_core`` stays cheap (and nothing inside the library imports these names from here)::

    from ovi_core import OviPipeline, write_tiny_weights

    paths = write_tiny_weights("weights-tiny")  # a complete tiny random weight set, official layout
    pipe = OviPipeline.from_weights("weights-tiny", device="cpu", download=False)
    result = pipe.generate("A man says <S>Hello from Ovi.<E> <AUDCAP>clear male voice<ENDAUDCAP>", steps=2)
    OviPipeline.save(result, "out.mp4")

Everything else is imported from the module that defines it (README "Layout" says which package holds what).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> defining module
_PUBLIC = {
    "OviPipeline": "ovi_core.pipeline",
    "GenerationResult": "ovi_core.pipeline",
    "SamplingSettings": "ovi_core.sampling.settings",
    "write_tiny_weights": "ovi_core.tiny",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ovi_core' has no attribute {name!r}")
