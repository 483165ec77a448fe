"""Cross-fades for the seams between windows: equal-power for audio, linear for pixels and latents.

The audio cross-fade keeps the power of the sum constant for the measured correlation ``r`` of the two
overlapping signals: with linear ramps ``p = 1 - t`` and ``q = t`` both are scaled by
``1 / sqrt(p^2 + q^2 + 2 p q r)``. For unrelated signals (``r = 0``) that is the classic equal-power fade
(both gains 0.707 in the middle); for identical signals (``r = 1``) it reduces to the linear fade, which leaves
the signal unchanged, where a plain sine/cosine fade would add a 3 dB swell. Neighbouring windows share their
overlap (the guides carry it), so their decoded audio there is strongly correlated, and the compensation
matters.
"""

from __future__ import annotations

import torch


def fade_ramp(n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Weights of the incoming side, ``t_i = (i + 0.5) / n`` for ``i < n``: float64 ``[n]`` strictly in (0, 1)."""
    if n < 0:
        raise ValueError(f"cross-fade length must be >= 0, got {n}")
    return (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / max(n, 1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised correlation ``<a, b> / (|a| |b|)`` of two equally shaped signals, clamped to [0, 1]
    (0 when either is silent)."""
    x, y = a.double().flatten(), b.double().flatten()
    den = float(x.norm() * y.norm())
    if den <= 1e-24:
        return 0.0
    return min(1.0, max(0.0, float(x @ y) / den))


def equal_power_gains(n: int, *, r: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gain_out, gain_in)``, float64 ``[n]``: constant power for two signals of correlation ``r`` in [0, 1]."""
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {r}")
    q = fade_ramp(n)
    p = 1.0 - q
    g = torch.rsqrt(p * p + q * q + 2.0 * p * q * r)
    return p * g, q * g


def audio_crossfade(a: torch.Tensor, b: torch.Tensor, *, r: float | None = None) -> torch.Tensor:
    """Equal-power cross-fade from ``a`` to ``b``, both ``[C, n]`` (the same samples of two windows).

    ``r``: the correlation to compensate for; ``None`` measures it (:func:`correlation`). Returns ``[C, n]`` in
    ``a``'s dtype.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"audio cross-fade needs two [C, n] signals of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    rr = correlation(a, b) if r is None else float(r)
    g_out, g_in = equal_power_gains(a.shape[1], r=rr)
    out = a.double() * g_out.to(a.device) + b.double() * g_in.to(a.device)
    return out.to(a.dtype)


def linear_crossfade(a: torch.Tensor, b: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Linear cross-fade from ``a`` to ``b`` (equal shapes) along ``dim``: pixel frames ``[n, H, W, 3]`` with
    ``dim=0``, video latents ``[B, 48, n, h, w]`` with ``dim=2``, audio latents ``[B, n, 20]`` with ``dim=1``."""
    if a.shape != b.shape:
        raise ValueError(f"cross-fade needs two tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    dim = dim % a.ndim
    shape = [1] * a.ndim
    shape[dim] = a.shape[dim]
    work = torch.promote_types(a.dtype, torch.float32)  # float32 for frames/latents (float64 stays float64)
    t = fade_ramp(a.shape[dim], device=a.device).to(work).view(shape)
    out = a.to(work) + (b.to(work) - a.to(work)) * t  # exact where a == b (replace-mode overlaps)
    return out.to(a.dtype)
