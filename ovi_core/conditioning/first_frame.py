"""An image as the first frame of a clip whose size is already fixed (the native path's image->AV: the LATENT from
OviEmptyLatentAV sets the size, so the image is fitted to it rather than the other way round)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_first_frame(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE ``[1, H, W, 3]`` (or ``[H, W, 3]``) in [0, 1] -> ``[1, 3, 1, height, width]`` in [-1, 1]: scaled to cover
    the target (bicubic, aspect kept), then centre-cropped."""
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"expected an IMAGE [1, H, W, 3], got {list(image.shape)}")
    x = image[:1].permute(0, 3, 1, 2).float()  # [1, 3, H, W]
    s = max(height / x.shape[2], width / x.shape[3])
    nh, nw = max(height, round(x.shape[2] * s)), max(width, round(x.shape[3] * s))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False).clamp(0, 1)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return (x * 2 - 1)[:, :, None]  # [1, 3, 1, height, width]
