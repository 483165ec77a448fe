"""Latent previews while sampling, through ComfyUI's own previewer and preview settings.

The video stream's latent is a Wan2.2 latent, so ComfyUI's ``latent_preview.get_previewer`` with its ``Wan22``
latent format gives the preview core samplers show for Wan2.2: the 48 -> 3 linear RGB projection (``auto`` /
``latent2rgb``), a Wan2.2 tiny autoencoder where the user installed one (``taesd``), or nothing (``none``), as
chosen by ``--preview-method`` or the frontend's per-run setting. Without ComfyUI (or with previews off) there is
no preview callback and the sampler only counts steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import _comfy

logger = logging.getLogger(__name__)


def _previewer(device):
    lp = _comfy._try_import("latent_preview")
    formats = _comfy._try_import("comfy.latent_formats")
    if lp is None or formats is None or not hasattr(formats, "Wan22"):
        return None
    try:
        return lp.get_previewer(device, formats.Wan22())
    except Exception as e:  # noqa: BLE001 (a preview must never stop a run)
        logger.debug("no latent preview: %s", e)
        return None


def video_preview(total: int, node_id: str | None, device) -> Callable[[int, int, object], None] | None:
    """``preview(done, total, x0_video)`` updating the node's progress bar with a preview image of the middle
    latent frame of the step's clean-video prediction; None when ComfyUI has no previewer for this run."""
    utils = _comfy._try_import("comfy.utils")
    previewer = _previewer(device)
    if previewer is None or utils is None or not hasattr(utils, "ProgressBar"):
        return None
    try:
        bar = utils.ProgressBar(total, node_id=node_id)
    except TypeError:
        bar = utils.ProgressBar(total)

    def preview(done: int, steps: int, x0) -> None:
        image = None
        try:
            mid = x0.shape[2] // 2
            image = previewer.decode_latent_to_preview_image("JPEG", x0[:1, :, mid:mid + 1].float())
        except Exception as e:  # noqa: BLE001 (best effort, as core's previews)
            logger.debug("latent preview failed: %s", e)
        bar.update_absolute(done, steps, image)

    return preview
