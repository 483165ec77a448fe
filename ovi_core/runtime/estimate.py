"""How much GPU memory a fusion-DiT forward needs, and what fits: pure arithmetic, no device queries.

The activation formula comes from traces on the ``meta`` device with a flash-like attention kernel (live storages
of one full-size 11.66 B forward, RoPE tables and the cached text keys/values included; GPU_REVIEW §3, checked by
``tests/test_runtime_estimate_trace.py``)::

    activations ≈ 14.2·A + 360 MiB·B,   A = B·L·3072·2 bytes

with ``L`` the tokens of one row (video + audio) and ``B`` the rows of one forward (2 with batched CFG). 360 MiB per
row is the text k/v cache (2 towers x 30 blocks x 512 tokens x 3072 x k and v x 2 bytes); the traces give
14.14-14.16·A for the rest, rounded up to 14.2. Traced / estimated with B = 2: 3.16 / 3.17 GiB at 704²×121,
5.25 / 5.26 GiB at 960²×121, 9.64 / 9.68 GiB at 960²×241. (The fit 14.1·A + 0.35 GiB·B used before fell 0.01-0.03
GiB short of the trace.) The eager RoPE's float64 temporaries set that peak; the fused RoPE kernel on CUDA lowers it
by a few hundred MiB, so the estimate stays an upper bound there.

:func:`plan_dit` turns that and the free memory into a placement: the whole DiT on the device (``gpu``), or
``block_swap`` with as many resident fused blocks as fit. ComfyUI's nodes and the command line's ``auto`` memory
mode both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovi_core import sizes

GIB = 1 << 30
DIM = 3072  # hidden size of both towers
BYTES_PER_VALUE = 2  # bf16 activations
ACT_PER_A = 14.2
ROW_BYTES = 2 * 30 * 512 * DIM * 2 * BYTES_PER_VALUE  # the text k/v cache of one row: 360 MiB
MARGIN = GIB  # CUDA context, cuBLAS workspace, fragmentation
IN_FLIGHT_BLOCKS = 2  # block swap: the block computing and the one being uploaded


def dit_tokens(height: int, width: int, *, version: str) -> int:
    """Tokens of one row (video + audio) for an ``height x width`` clip of the model ``version``
    (video: latent frames x (h/32) x (w/32) after the DiT's 2x2 patchify; audio: the spec's latent length)."""
    spec = sizes.get_spec(version)
    video = spec.video_latent_frames * (height // sizes.SIDE_MULTIPLE) * (width // sizes.SIDE_MULTIPLE)
    return video + spec.audio_latent_length


def dit_tokens_for_area(area: int, *, version: str) -> int:
    """Tokens of one row for a clip of ``area`` pixels (the size a node snaps every request to)."""
    spec = sizes.get_spec(version)
    return spec.video_latent_frames * (int(area) // sizes.SIDE_MULTIPLE**2) + spec.audio_latent_length


def activation_bytes(tokens: int, rows: int = 2) -> int:
    """Peak activation bytes of one DiT forward over ``rows`` rows of ``tokens`` tokens (module docstring)."""
    if tokens < 0 or rows < 1:
        raise ValueError(f"tokens must be >= 0 and rows >= 1, got tokens={tokens}, rows={rows}")
    a = rows * tokens * DIM * BYTES_PER_VALUE
    return int(ACT_PER_A * a) + ROW_BYTES * rows


@dataclass(frozen=True)
class DitPlan:
    """What :func:`plan_dit` chose: ``mode`` ("gpu" or "block_swap"), resident fused blocks, the bytes it needs
    on the device (weights that stay + activations + margin) and whether that fits in the free memory."""

    mode: str
    blocks_on_gpu: int
    need_bytes: int
    activation_bytes: int
    fits: bool


def plan_dit(free_bytes: int, *, weight_bytes: int, block_bytes: int, num_blocks: int, tokens: int,
             rows: int = 2, margin: int = MARGIN, allow_full: bool = True) -> DitPlan:
    """Placement of a DiT of ``weight_bytes`` (``num_blocks`` fused blocks of ``block_bytes`` each) for a forward
    of ``rows`` x ``tokens`` with ``free_bytes`` free on the device.

    The whole model when weights + activations + ``margin`` fit; else ``block_swap`` keeping the non-block weights,
    two blocks in flight and as many resident blocks as fit. ``fits`` is False when even no resident block fits.
    ``allow_full=False`` always streams (ComfyUI's ``--lowvram``).
    """
    act = activation_bytes(tokens, rows)
    full = weight_bytes + act + margin
    if allow_full and full <= free_bytes:
        return DitPlan("gpu", num_blocks, full, act, True)
    nonblock = max(0, weight_bytes - num_blocks * block_bytes)
    in_flight = min(IN_FLIGHT_BLOCKS, num_blocks) * block_bytes
    base = nonblock + in_flight + act + margin
    resident = 0 if block_bytes <= 0 else (free_bytes - base) // block_bytes
    resident = int(max(0, min(resident, num_blocks - 1)))
    return DitPlan("block_swap", resident, base + resident * block_bytes, act, base <= free_bytes)
