"""A picture of the loss curve (a ComfyUI IMAGE)."""

from __future__ import annotations

import torch


def loss_curve_image(losses: list[float], *, width: int = 512, height: int = 256) -> torch.Tensor:
    """A plain plot of the loss per step: ``[1, height, width, 3]`` float in [0, 1] (ComfyUI IMAGE)."""
    img = torch.ones(height, width, 3)
    m = 16  # margin
    img[m:height - m, m] = 0.6  # y axis
    img[height - m, m:width - m] = 0.6  # x axis
    if not losses:
        return img[None]
    y = torch.tensor(losses, dtype=torch.float64)
    y = torch.where(torch.isfinite(y), y, torch.nan)
    if not torch.isfinite(y).any():
        return img[None]
    lo, hi = float(torch.nanquantile(y, 0.0)), float(torch.nanquantile(y, 1.0))
    span = hi - lo if hi > lo else 1.0
    n = len(losses)
    xs = torch.linspace(m + 1, width - m - 1, max(n, 2))[:n]
    ys = (height - m - 1) - (y - lo) / span * (height - 2 * m - 2)
    pts = [(float(xs[i]), float(ys[i])) for i in range(n) if torch.isfinite(ys[i])]
    if len(pts) == 1:
        pts = pts * 2
    color = torch.tensor([0.1, 0.3, 0.8])
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):  # finite points, joined in order
        k = int(max(abs(x1 - x0), abs(y1 - y0))) + 2
        for t in torch.linspace(0, 1, k).tolist():
            xi, yi = round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t)
            img[max(0, yi - 1):yi + 1, max(0, xi - 1):xi + 1] = color
    return img[None]
