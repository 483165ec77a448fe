"""GGML block formats in torch: quantize and dequantize ``Q8_0``, ``Q6_K`` and ``Q4_K`` (plus the float types).

The byte layouts are those of ggml (``ggml-common.h``) as the ``gguf`` package reads them; the tests check
every format against ``gguf.quants.dequantize`` (numpy), an independent reference. Dequantization runs on
whatever device the packed bytes are on, so a layer's weight is expanded where it is used (GPU or CPU).

Blocks run along the last (innermost) dimension, so a tensor ``[..., n]`` needs ``n`` divisible by the
block size (32 for ``Q8_0``, 256 for the K formats).

* ``Q8_0`` (34 bytes / 32 values): ``d`` fp16, 32 int8; ``x = d * q``.
* ``Q6_K`` (210 bytes / 256): ``ql`` 128 B (low 4 bits), ``qh`` 64 B (high 2 bits), 16 int8 scales (one per
  16 values, signed), ``d`` fp16; ``x = d * scale * (q - 32)``.
* ``Q4_K`` (144 bytes / 256): ``d``, ``dmin`` fp16, 12 B of packed 6-bit scales and mins (8 sub-blocks of
  32), 128 B of 4-bit values; ``x = d * sc * q - dmin * m``.

``Q8_0`` is plain round-to-nearest. ``Q6_K`` and ``Q4_K`` search their sub-block scales (and Q4_K's offsets)
for the least squared error, in the spirit of llama.cpp's ``make_qx_quants`` / ``make_qkx2_quants`` but our
own vectorized torch code (see the comment above :data:`Q6_K_STEPS`): on Gaussian weights about 15 % (Q6_K) and
10 % (Q4_K) less rel-L2 error than plain round-to-nearest scales, and no block worse. The bytes are the
same formats; bounds per type in :data:`EXPECTED_REL_ERROR`.
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
#: rel-L2 error bound of one quantize/dequantize round trip of N(0, 1)-like weights (measured, [64, 1024],
#: five seeds, one of them at std 0.02: Q8_0 0.0053-0.0054, Q6_K 0.0164-0.0166, Q4_K 0.0699-0.0704, BF16
#: 0.0017, F16 0.0002; before the K-quant scale search, Q6_K 0.0192-0.0194 and Q4_K 0.0782-0.0787)
EXPECTED_REL_ERROR: dict[int, float] = {Q8_0: 0.006, Q6_K: 0.018, Q4_K: 0.075, F16: 3e-4, BF16: 2e-3, F32: 0.0}
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


# ---- Q6_K / Q4_K: scale search ------------------------------------------------------------------
# Our own search (the idea is llama.cpp's ``make_qx_quants`` / ``make_qkx2_quants``), vectorized: the
# candidates are one more tensor dimension, so each step is a few large torch ops, in float32.
# 1. per sub-block, try a few candidate steps, round the values with each, fit the scale (and, for Q4_K,
#    the offset) to those integers by least squares, keep the fit with the smallest squared error;
# 2. quantize the fitted sub-block scales to the super-block's integer codes (fp16 ``d`` times an int8 or
#    6-bit code), as plain round-to-nearest does;
# 3. the code rounding undoes part of step 1 (the best steps are "lucky" ones that put many values near a
#    grid point), so try the neighbouring codes too, each with its values re-rounded, keep the best;
# 4. per super-block, keep the plain round-to-nearest codes instead where they do better (rare: some sparse
#    or heavy-tailed blocks), so no block is worse than the plain rule; round the values with the final scales.
# The sums run over the outermost dimension of a values-major copy ([values, candidates, sub-blocks]):
# vectorized adds, where a sum over a short innermost dimension is several times slower.
# Candidate counts: error against time, see bench/RESULTS.md ("Quantized fusion files").

#: Q6_K step 1: the sub-block's value of largest magnitude maps to ``-(32 + s)`` (it may clip at -32)
Q6_K_STEPS = tuple(float(s) for s in range(-8, 2))
#: Q6_K step 3: codes ``round(scale / d) + k``
Q6_K_NEIGHBOURS = tuple(range(-3, 4))
#: Q4_K step 1: the sub-block's range ``max - min(min, 0)`` spans ``15 + s`` steps
Q4_K_STEPS = tuple(-1.0 + 0.25 * i for i in range(9))
#: Q4_K step 3: (scale code, min code) offsets
Q4_K_NEIGHBOURS = tuple((i, j) for i in (-1, 0, 1) for j in (-2, -1, 0, 1, 2))
#: values per chunk of the K quantizers; the largest temporaries are chunk x candidates (<= 4 MiB)
CHUNK = 1 << 16


def _inv(t: torch.Tensor) -> torch.Tensor:
    """``1 / t``, with 0 where ``t`` is 0 (or so small that the reciprocal overflows)."""
    return t.reciprocal().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def _pick(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``values [k, m]`` at the candidate index ``idx [m]`` -> ``[1, m]``."""
    return values.gather(0, idx.unsqueeze(0))


def _cands(values: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).unsqueeze(1)  # [k, 1]


def _per_sub(t: torch.Tensor, subs: int) -> torch.Tensor:
    """``[n, 1]`` per super-block -> ``[1, n * subs]`` per sub-block."""
    return t.expand(-1, subs).reshape(1, -1)


def _sq_err(r: torch.Tensor, wt: torch.Tensor | None) -> torch.Tensor:
    """``r [values, k, m]`` residuals -> ``[k, m]`` (weighted) sums of squares; overwrites ``r``."""
    r.mul_(r)
    if wt is not None:
        r.mul_(wt)
    return r.sum(0)


def _q6_k_err(xt, wt, d, sc):
    """Squared error per super-block ``[n, 1]`` of codes ``d [n, 1]``, ``sc [n, 16]``."""
    eff = _per_sub(d, 16) * sc.reshape(1, -1)
    r = (xt * _inv(eff)).round_().clamp_(-32, 31).mul_(eff).sub_(xt)
    return _sq_err(r, wt).reshape(-1, 16).sum(1, keepdim=True)


def _q6_k_codes(xt: torch.Tensor, wt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``xt [16, 1, m]`` (values-major sub-blocks; weights ``wt`` alike or None) -> ``d [n, 1]`` (fp16-exact
    float32) and the int8 codes ``sc [n, 16]`` (float32), ``m = 16 n``."""
    hi, lo = xt.amax(dim=0), xt.amin(dim=0)  # [1, m]
    # plain rule: each sub-block's largest magnitude -> 31, the largest scale -> code 127
    plain = (torch.maximum(hi, -lo) / 31.0).reshape(-1, 16)
    d0 = (plain.amax(dim=1, keepdim=True) / 127.0).to(torch.float16).float()
    sc0 = torch.round(plain * _inv(d0)).clamp_(0, 127)
    # step 1, candidates on dim 1: the signed extreme -> -(32 + s), on the longer side of [-32, 31]
    ext = torch.where(hi >= -lo, hi, lo)
    q = (xt * ((_cands(Q6_K_STEPS, xt) + 32.0) * _inv(-ext))).round_().clamp_(-32, 31)  # [16, S, m]
    wq = q if wt is None else q * wt
    sxq = (wq * xt).sum(0)
    inv_sqq = _inv(wq.mul_(q).sum(0) if wt is not None else q.square_().sum(0))  # [S, m]
    del q, wq
    # sxq^2 / sqq = sum w x^2 - (weighted squared error of the best scale for those integers)
    scale = _pick(sxq * inv_sqq, (sxq * sxq * inv_sqq).max(dim=0).indices).reshape(-1, 16)
    # step 2: the largest scale gets the code -128
    d = (scale.gather(1, scale.abs().argmax(dim=1, keepdim=True)) / -128.0).to(torch.float16).float()
    # step 3, neighbouring codes on dim 1
    dm = _per_sub(d, 16)
    c = (torch.round(scale.reshape(1, -1) * _inv(dm)) + _cands(Q6_K_NEIGHBOURS, xt)).clamp_(-128, 127)  # [K, m]
    eff = dm * c
    r = (xt * _inv(eff)).round_().clamp_(-32, 31).mul_(eff).sub_(xt)  # [16, K, m]
    sc = _pick(c, _sq_err(r, wt).min(dim=0).indices).reshape(-1, 16)
    del r
    # step 4
    keep = _q6_k_err(xt, wt, d, sc) <= _q6_k_err(xt, wt, d0, sc0)
    return torch.where(keep, d, d0), torch.where(keep, sc, sc0)


def _q4_k_err(xt, wt, d, dmin, sc, mn):
    """Squared error per super-block ``[n, 1]`` of the codes ``d, dmin [n, 1]``, ``sc, mn [n, 8]``."""
    st, of = _per_sub(d, 8) * sc.reshape(1, -1), _per_sub(dmin, 8) * mn.reshape(1, -1)
    z = xt + of
    r = (z * _inv(st)).round_().clamp_(0, 15).mul_(st).sub_(z)
    return _sq_err(r, wt).reshape(-1, 8).sum(1, keepdim=True)


def _q4_k_codes(xt: torch.Tensor, wt: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``xt [32, 1, m]`` -> ``d, dmin [n, 1]`` (fp16-exact float32), 6-bit scale and min codes ``sc, mn [n, 8]``
    (float32), ``m = 8 n``."""
    hi, lo = xt.amax(dim=0), xt.amin(dim=0).clamp_(max=0.0)  # [1, m]; the offset is never negative
    # plain rule: range / 15 and -min, the largest of each -> code 63
    step0, off0 = ((hi - lo) / 15.0).reshape(-1, 8), (-lo).reshape(-1, 8)
    d0 = (step0.amax(dim=1, keepdim=True) / 63.0).to(torch.float16).float()
    dmin0 = (off0.amax(dim=1, keepdim=True) / 63.0).to(torch.float16).float()
    sc0, mn0 = torch.round(step0 * _inv(d0)).clamp_(0, 63), torch.round(off0 * _inv(dmin0)).clamp_(0, 63)
    sw = torch.full_like(lo, xt.shape[0]) if wt is None else wt.sum(0)
    swx = xt.sum(0) if wt is None else (wt * xt).sum(0)
    # step 1, candidates on dim 1: the range -> 15 + s steps
    q = ((xt - lo) * ((_cands(Q4_K_STEPS, xt) + 15.0) * _inv(hi - lo))).round_().clamp_(0, 15)  # [32, S, m]
    wq = q if wt is None else q * wt
    swq, swqx = wq.sum(0), (wq * xt).sum(0)
    swqq = wq.mul_(q).sum(0) if wt is not None else q.square_().sum(0)  # [S, m]
    del q, wq
    # least squares x ~ a * q + b with b <= 0 (the format subtracts a non-negative offset)
    det = sw * swqq - swq * swq
    inv_det = _inv(det)
    a = (sw * swqx - swq * swx) * inv_det
    b = (swqq * swx - swq * swqx) * inv_det
    no_off = (b > 0) | (det <= 0)  # then a = <x, q>_w / <q, q>_w
    a = torch.where(no_off, swqx * _inv(swqq), a).clamp_(min=0.0)
    b = torch.where(no_off, torch.zeros_like(b), b)
    e = a * (a * swqq - 2 * swqx) + b * (b * sw - 2 * swx) + 2 * a * b * swq  # error less sum w x^2
    best = e.min(dim=0).indices
    step, off = _pick(a, best).reshape(-1, 8), -_pick(b, best).reshape(-1, 8)
    # step 2
    d = (step.amax(dim=1, keepdim=True) / 63.0).to(torch.float16).float()
    dmin = (off.amax(dim=1, keepdim=True) / 63.0).to(torch.float16).float()
    # step 3, (scale code, min code) pairs on dim 1
    dm, dminm = _per_sub(d, 8), _per_sub(dmin, 8)
    nb = _cands(Q4_K_NEIGHBOURS, xt).squeeze(1)
    c = (torch.round(step.reshape(1, -1) * _inv(dm)) + nb[:, :1]).clamp_(0, 63)  # [K, m]
    m = (torch.round(off.reshape(1, -1) * _inv(dminm)) + nb[:, 1:]).clamp_(0, 63)
    st = dm * c
    z = xt + dminm * m  # [32, K, m]
    r = (z * _inv(st)).round_().clamp_(0, 15).mul_(st).sub_(z)
    best = _sq_err(r, wt).min(dim=0).indices
    del r, z
    sc, mn = _pick(c, best).reshape(-1, 8), _pick(m, best).reshape(-1, 8)
    # step 4
    keep = _q4_k_err(xt, wt, d, dmin, sc, mn) <= _q4_k_err(xt, wt, d0, dmin0, sc0, mn0)
    return (torch.where(keep, d, d0), torch.where(keep, dmin, dmin0), torch.where(keep, sc, sc0),
            torch.where(keep, mn, mn0))


def _values_major(x: torch.Tensor, v: int) -> torch.Tensor:
    """``[..., k * v]`` -> ``[v, 1, k]`` (sub-blocks of ``v`` values, values first)."""
    return x.reshape(-1, v).t().contiguous().unsqueeze(1)


def _q6_k(x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    xb = x.reshape(-1, 16, 16)  # [n, sub-block, value]
    n = xb.shape[0]
    d, sc = _q6_k_codes(_values_major(xb, 16), None if w is None else _values_major(w, 16))
    eff = (d * sc).unsqueeze(2)  # [n, 16, 1]
    q = ((xb * _inv(eff)).round_().clamp_(-32, 31) + 32).to(torch.uint8).reshape(n, 2, 4, 32)  # [n, half, r, l]
    lo, hi = q & 0xF, q >> 4
    ql = (lo[:, :, 0:2] | (lo[:, :, 2:4] << 4)).reshape(n, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
    return torch.cat([ql, qh, sc.to(torch.int8).view(torch.uint8), _f16_bytes(d)], dim=1)


def _q4_k(x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    xb = x.reshape(-1, 8, 32)  # [n, sub-block, value]
    n = xb.shape[0]
    d, dmin, sc, mn = _q4_k_codes(_values_major(xb, 32), None if w is None else _values_major(w, 32))
    step = (d * sc).unsqueeze(2)
    off = (dmin * mn).unsqueeze(2)
    q = ((xb + off) * _inv(step)).round_().clamp_(0, 15).to(torch.uint8).reshape(n, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    sc8, mn8 = sc.to(torch.uint8), mn.to(torch.uint8)
    scales = torch.cat([
        (sc8[:, :4] & 63) | ((sc8[:, 4:] >> 4) << 6),
        (mn8[:, :4] & 63) | ((mn8[:, 4:] >> 4) << 6),
        (sc8[:, 4:] & 0xF) | ((mn8[:, 4:] & 0xF) << 4),
    ], dim=1)
    return torch.cat([_f16_bytes(d), _f16_bytes(dmin), scales, qs], dim=1)


def _k_quantize(x: torch.Tensor, w: torch.Tensor | None, qtype: int) -> torch.Tensor:
    """``x [..., n]`` through the K quantizer in chunks of about :data:`CHUNK` values (whole rows, or whole
    blocks of one row), each cast to float32 on its own: no float32 copy of the whole tensor."""
    fn, ts = (_q6_k if qtype == Q6_K else _q4_k), BLOCK[qtype][1]
    cols = x.shape[-1]
    rows = x.reshape(-1, cols)
    wr = None if w is None else torch.broadcast_to(w, x.shape).reshape(-1, cols)
    out = torch.empty(rows.shape[0], cols // QK_K * ts, dtype=torch.uint8, device=x.device)
    per = max(1, CHUNK // cols)
    span = min(cols, max(QK_K, CHUNK // QK_K * QK_K))
    for r in range(0, rows.shape[0], per):
        for c in range(0, cols, span):
            part = (slice(r, r + per), slice(c, c + span))
            wc = None if wr is None else wr[part].float()
            out[r:r + per, c // QK_K * ts:(c + span) // QK_K * ts] = fn(rows[part].float(), wc).reshape(
                -1, min(span, cols - c) // QK_K * ts)
    return out.reshape(-1)


def quantize(x: torch.Tensor, qtype: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., n]`` (any float dtype) -> the GGML bytes ``uint8 [nbytes]`` (computed in float32).

    ``weights`` (Q6_K / Q4_K only; broadcastable to ``x``, non-negative): the scale search minimises
    ``sum(weights * (x - dequantized)^2)`` instead of the plain squared error (e.g. ``x.abs()``, or a per-input
    channel importance of shape ``[n]``). Q8_0 is plain round-to-nearest and ignores it.
    """
    if qtype in FLOAT_TYPES:
        return x.detach().to(FLOAT_TYPES[qtype]).contiguous().reshape(-1).view(torch.uint8)
    if not can_quantize(tuple(x.shape), qtype):
        raise ValueError(f"{TYPE_NAMES[qtype]} needs the last dimension divisible by {BLOCK[qtype][0]}, "
                         f"got shape {tuple(x.shape)}.")
    if qtype == Q8_0:
        return _q8_0(x.detach().float().contiguous()).reshape(-1)
    w = None if weights is None else weights.detach().to(x.device)
    return _k_quantize(x.detach(), w, qtype)


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
    # shifts by Python ints: no constant tensor to copy to the device (a host sync per call on CUDA)
    hi = torch.cat([qh, qh >> 2, qh >> 4, qh >> 6], dim=2) & 3  # [n, half, r, 32]
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
