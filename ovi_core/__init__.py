"""ovi_core: a plain PyTorch implementation of Ovi (twin-backbone audio+video generation).

This package never imports ComfyUI. Submodules are imported on demand so that ``import ovi_core`` is cheap.
"""

__version__ = "0.1.0"
