"""GGML block formats in torch: quantize and dequantize ``Q8_0``, ``Q6_K`` and ``Q4_K`` (plus the float types).

The byte layouts are those of ggml (``ggml-common.h``) as the ``gguf`` package reads them; the tests check
every format against ``gguf.quants.dequantize`` (numpy), an independent reference. Dequantization runs on
whatever device the packed bytes are on, so a layer's weight is expanded where it is used (GPU or CPU).

Blocks run along the last (innermost) dimension, so a tensor ``[..., n]`` needs ``n`` divisible by the
block size (32 for ``Q8_0``, 256 for the K formats).

* ``Q8_0`` (34 bytes / 32 values): ``d`` fp16, 32 int8; ``x = d * q``.
* ``Q6_K`` (210 bytes / 256): ``ql`` 128 B (low 4 bits), ``qh`` 64 B (high 2 bits), 16 int8 scales (one per
  16 values), ``d`` fp16; ``x = d * scale * (q - 32)``.
* ``Q4_K`` (144 bytes / 256): ``d``, ``dmin`` fp16, 12 B of packed 6-bit scales and mins (8 sub-blocks of
  32), 128 B of 4-bit values; ``x = d * sc * q - dmin * m``.

The quantizers are the plain round-to-nearest versions (no llama.cpp-style search for the best scale), so
their error is a little above llama.cpp's, within the bounds given by :data:`EXPECTED_REL_ERROR`.
"""

from __future__ import annotations

import math

import torch

# name -> (GGMLQuantizationType value, block size, bytes per block); the values are the GGUF type ids.
F32, F16, Q8_0, Q4_K, Q6_K, BF16 = 0, 1, 8, 12, 14, 30
TYPE_NAMES: dict[int, str] = {F32: "F32", F16: "F16", BF16: "BF16", Q8_0: "Q8_0", Q4_K: "Q4_K", Q6_K: "Q6_K"}
BLOCK: dict[int, tuple[int, int]] = {  # qtype -> (values per block, bytes per block)
    F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q8_0: (32, 34), Q6_K: (256, 210), Q4_K: (256, 144),
}
QUANTIZED = (Q8_0, Q6_K, Q4_K)
FLOAT_TYPES = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}
#: rough rel-L2 error of one quantize/dequantize round trip of Gaussian weights (measured bound, generous)
EXPECTED_REL_ERROR: dict[int, float] = {Q8_0: 0.006, Q6_K: 0.03, Q4_K: 0.11, F16: 1e-3, BF16: 8e-3, F32: 0.0}
QK_K = 256


def type_id(name: str) -> int:
    """``'q8_0'`` / ``'Q4_K'`` / ``'f16'`` ... -> the GGUF type id."""
    for k, v in TYPE_NAMES.items():
        if v.lower() == name.lower():
            return k
    raise ValueError(f"Unknown GGML type {name!r}; known: {sorted(v.lower() for v in TYPE_NAMES.values())}.")


def nbytes(shape: tuple[int, ...] | torch.Size, qtype: int) -> int:
    """Bytes that a tensor of logical ``shape`` takes in ``qtype``."""
    n = math.prod(shape)
    bs, ts = BLOCK[qtype]
    if n % bs:
        raise ValueError(f"{TYPE_NAMES[qtype]} needs a multiple of {bs} values, got shape {tuple(shape)}.")
    return n // bs * ts


def can_quantize(shape: tuple[int, ...] | torch.Size, qtype: int) -> bool:
    """Whether the last dimension splits into whole blocks of ``qtype``."""
    return len(shape) >= 1 and shape[-1] % BLOCK[qtype][0] == 0


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _f16_bytes(x: torch.Tensor) -> torch.Tensor:
    """``[n]`` float -> ``[n, 2]`` uint8 (little-endian fp16)."""
    return x.to(torch.float16).contiguous().view(torch.uint8).reshape(-1, 2)


def _f16_of(b: torch.Tensor) -> torch.Tensor:
    """``[n, 2]`` uint8 -> ``[n, 1]`` float32."""
    return b.contiguous().view(torch.float16).float()


def _blocks(raw: torch.Tensor, qtype: int) -> torch.Tensor:
    ts = BLOCK[qtype][1]
    flat = raw.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    if flat.numel() % ts:
        raise ValueError(f"{flat.numel()} bytes are not whole {TYPE_NAMES[qtype]} blocks of {ts} bytes.")
    return flat.reshape(-1, ts)


# ----------------------------------------------------------------------------------------------
# quantize: float tensor [..., n] -> uint8 [n_blocks * bytes_per_block]
# ----------------------------------------------------------------------------------------------


def _q8_0(x: torch.Tensor) -> torch.Tensor:
    xb = x.reshape(-1, 32)
    amax = xb.abs().amax(dim=1, keepdim=True)
    d = (amax / 127.0).to(torch.float16).float()  # the stored scale
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(xb * inv).clamp_(-127, 127).to(torch.int8)
    return torch.cat([_f16_bytes(d), q.view(torch.uint8)], dim=1)


def _q6_k(x: torch.Tensor) -> torch.Tensor:
    xb = x.reshape(-1, 16, 16)  # [n, sub-block, value]
    n = xb.shape[0]
    amax = xb.abs().amax(dim=2)  # [n, 16]
    s = amax / 31.0
    d = (s.amax(dim=1, keepdim=True) / 127.0).to(torch.float16).float()  # [n, 1]
    inv_d = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    sc = torch.round(s * inv_d).clamp_(0, 127)  # int8 scales, non-negative here
    eff = (d * sc).unsqueeze(2)  # [n, 16, 1]
    inv = torch.where(eff > 0, 1.0 / eff, torch.zeros_like(eff))
    q = (torch.round(xb * inv).clamp_(-32, 31) + 32).to(torch.uint8).reshape(n, 2, 4, 32)  # [n, half, r, l]
    lo, hi = q & 0xF, q >> 4
    ql = (lo[:, :, 0:2] | (lo[:, :, 2:4] << 4)).reshape(n, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
    return torch.cat([ql, qh, sc.to(torch.int8).view(torch.uint8), _f16_bytes(d)], dim=1)


def _q4_k(x: torch.Tensor) -> torch.Tensor:
    xb = x.reshape(-1, 8, 32)  # [n, sub-block, value]
    n = xb.shape[0]
    lo = xb.amin(dim=2).clamp(max=0.0)
    hi = xb.amax(dim=2)
    s = (hi - lo) / 15.0  # sub-block step
    m = -lo  # sub-block offset, >= 0
    d = (s.amax(dim=1, keepdim=True) / 63.0).to(torch.float16).float()
    dmin = (m.amax(dim=1, keepdim=True) / 63.0).to(torch.float16).float()
    sc = torch.round(s * torch.where(d > 0, 1.0 / d, torch.zeros_like(d))).clamp_(0, 63)
    mn = torch.round(m * torch.where(dmin > 0, 1.0 / dmin, torch.zeros_like(dmin))).clamp_(0, 63)
    step = (d * sc).unsqueeze(2)
    off = (dmin * mn).unsqueeze(2)
    inv = torch.where(step > 0, 1.0 / step, torch.zeros_like(step))
    q = torch.round((xb + off) * inv).clamp_(0, 15).to(torch.uint8).reshape(n, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    sc8, mn8 = sc.to(torch.uint8), mn.to(torch.uint8)
    scales = torch.cat([
        (sc8[:, :4] & 63) | ((sc8[:, 4:] >> 4) << 6),
        (mn8[:, :4] & 63) | ((mn8[:, 4:] >> 4) << 6),
        (sc8[:, 4:] & 0xF) | ((mn8[:, 4:] & 0xF) << 4),
    ], dim=1)
    return torch.cat([_f16_bytes(d), _f16_bytes(dmin), scales, qs], dim=1)


def quantize(x: torch.Tensor, qtype: int) -> torch.Tensor:
    """``x [..., n]`` (any float dtype) -> the GGML bytes ``uint8 [nbytes]`` (computed in float32)."""
    if qtype in FLOAT_TYPES:
        return x.detach().to(FLOAT_TYPES[qtype]).contiguous().reshape(-1).view(torch.uint8)
    if not can_quantize(tuple(x.shape), qtype):
        raise ValueError(f"{TYPE_NAMES[qtype]} needs the last dimension divisible by {BLOCK[qtype][0]}, "
                         f"got shape {tuple(x.shape)}.")
    xf = x.detach().float().contiguous()
    fn = {Q8_0: _q8_0, Q6_K: _q6_k, Q4_K: _q4_k}[qtype]
    return fn(xf).reshape(-1)


# ----------------------------------------------------------------------------------------------
# dequantize: uint8 bytes -> float tensor of the logical shape
# ----------------------------------------------------------------------------------------------


def _dq8_0(b: torch.Tensor) -> torch.Tensor:
    return _f16_of(b[:, :2]) * b[:, 2:].view(torch.int8).float()


def _dq6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql = b[:, :128].reshape(n, 2, 1, 64)  # [n, half, -, 64]
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    sc = b[:, 192:208].contiguous().view(torch.int8).float()  # [n, 16]
    d = _f16_of(b[:, 208:210])  # [n, 1]
    lo = torch.cat([ql & 0xF, ql >> 4], dim=2).reshape(n, 2, 4, 32)  # nibble-major: r = nib * 2 + byte // 32
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device).reshape(1, 1, 4, 1)
    hi = (qh >> shifts) & 3  # [n, half, r, 32]
    q = (lo | (hi << 4)).float() - 32.0
    return (d * sc).reshape(n, 16, 1).mul(q.reshape(n, 16, 16)).reshape(n, 256)


def _dq4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d = _f16_of(b[:, 0:2])
    dmin = _f16_of(b[:, 2:4])
    s = b[:, 4:16]
    s0, s1, s2 = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([s0 & 63, (s2 & 0xF) | ((s0 >> 6) << 4)], dim=1).float()
    mn = torch.cat([s1 & 63, (s2 >> 4) | ((s1 >> 6) << 4)], dim=1).float()
    qs = b[:, 16:144].reshape(n, 4, 1, 32)
    q = torch.cat([qs & 0xF, qs >> 4], dim=2).reshape(n, 8, 32).float()
    return ((d * sc).unsqueeze(2) * q - (dmin * mn).unsqueeze(2)).reshape(n, 256)


def dequantize(raw: torch.Tensor, qtype: int, shape: tuple[int, ...] | torch.Size,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GGML bytes (``uint8``, any shape, on any device) -> ``dtype`` tensor of ``shape`` on that device."""
    if qtype in FLOAT_TYPES:
        flat = raw.reshape(-1)
        flat = flat if flat.dtype == FLOAT_TYPES[qtype] else flat.contiguous().view(FLOAT_TYPES[qtype])
        return flat.reshape(shape).to(dtype)
    fn = {Q8_0: _dq8_0, Q6_K: _dq6_k, Q4_K: _dq4_k}.get(qtype)
    if fn is None:
        raise ValueError(f"GGML type {TYPE_NAMES.get(qtype, qtype)} is not supported; use Q8_0, Q6_K, Q4_K, "
                         "F16, BF16 or F32.")
    out = fn(_blocks(raw, qtype))
    if out.numel() != math.prod(shape):
        raise ValueError(f"{TYPE_NAMES[qtype]} data holds {out.numel()} values, shape {tuple(shape)} needs "
                         f"{math.prod(shape)}.")
    return out.reshape(shape).to(dtype)


__all__ = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q4_K", "TYPE_NAMES", "BLOCK", "QUANTIZED", "EXPECTED_REL_ERROR",
           "type_id", "nbytes", "can_quantize", "quantize", "dequantize"]
