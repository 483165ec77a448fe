"""ComfyUI entry point for ComfyUI-Ovi.

ComfyUI imports this package from ``custom_nodes/``. Importing it must stay cheap: heavy modules
(torch models, transformers) are imported lazily inside node functions.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    # ``ovi_core`` is a plain library living beside this file; make it importable as a top-level package.
    sys.path.insert(0, _HERE)

if __package__:  # ComfyUI imports it as a package (custom_nodes/<folder>)
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
else:  # a loose module: pytest collecting a checkout whose folder name is not a package name (ComfyUI-Ovi)
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
