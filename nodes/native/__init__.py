"""Ovi as a native ComfyUI model (issue #21): registration and the native-path nodes.

:func:`setup` registers the model config (only inside ComfyUI) and returns the node mappings; without ComfyUI the
nodes are still listed (their ``INPUT_TYPES`` need nothing of ComfyUI) but nothing is registered.
"""

from __future__ import annotations

import logging

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

logger = logging.getLogger(__name__)


def setup() -> bool:
    """Register native Ovi in ``comfy.supported_models`` (idempotent). False without ComfyUI."""
    try:
        from . import model
    except ImportError as e:  # ComfyUI absent (CI, notebooks) or too old
        logger.debug("Ovi native model not registered: %s", e)
        return False
    model.register()
    return True


__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "setup"]
