"""GGML block formats in torch, checked against the gguf package's numpy reference."""

import gguf
import numpy as np
import pytest
import torch

from ovi_core.quant import ggml
from ovi_core.quant.tensor import QuantizedWeight

TYPES = [(ggml.Q8_0, "Q8_0"), (ggml.Q6_K, "Q6_K"), (ggml.Q4_K, "Q4_K")]


@pytest.mark.parametrize("qtype,name", TYPES)
def test_dequantize_matches_gguf_reference(qtype, name):
    x = torch.randn(48, 512, generator=torch.Generator().manual_seed(1)) * 0.05
    raw = ggml.quantize(x, qtype)
    assert raw.dtype == torch.uint8 and raw.numel() == ggml.nbytes(x.shape, qtype)
    ref = gguf.quants.dequantize(raw.numpy().reshape(48, -1), gguf.GGMLQuantizationType[name])
    ours = ggml.dequantize(raw, qtype, x.shape)
    assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(ref)).float().reshape(x.shape))


@pytest.mark.parametrize("qtype,name", TYPES)
def test_round_trip_error_within_bound(qtype, name):
    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(2))
    y = ggml.dequantize(ggml.quantize(x, qtype), qtype, x.shape)
    err = float((y - x).norm() / x.norm())
    assert err < ggml.EXPECTED_REL_ERROR[qtype]
    # a coarser format is never better than a finer one
    assert err > {ggml.Q8_0: 0.0, ggml.Q6_K: 0.006, ggml.Q4_K: 0.03}[qtype]


def test_blocks_with_offsets_and_zeros():
    x = torch.zeros(4, 256)
    x[1] = torch.linspace(2.0, 3.0, 256)  # all positive: Q4_K needs its min term
    x[2, 7] = -5.0
    for q in (ggml.Q8_0, ggml.Q6_K, ggml.Q4_K):
        y = ggml.dequantize(ggml.quantize(x, q), q, x.shape)
        assert torch.equal(y[0], x[0]) and torch.isfinite(y).all()
        assert float((y[1] - x[1]).abs().max()) < 0.12
        assert abs(float(y[2, 7]) + 5.0) < 0.2


def test_q8_0_bytes_match_gguf_quantizer_closely():
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(3))
    ours = ggml.quantize(x, ggml.Q8_0).numpy()
    ref = gguf.quants.quantize(x.numpy(), gguf.GGMLQuantizationType.Q8_0).reshape(-1)
    assert (ours == ref).mean() > 0.98


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="divisible by 256"):
        ggml.quantize(torch.zeros(4, 96), ggml.Q4_K)
    with pytest.raises(ValueError, match="needs"):
        QuantizedWeight.from_ggml(torch.zeros(10, dtype=torch.uint8), ggml.Q8_0, (2, 32))
    assert ggml.can_quantize((4, 96), ggml.Q8_0) and not ggml.can_quantize((4, 96), ggml.Q6_K)


def test_float_types_round_trip_exactly():
    x = torch.randn(8, 8).to(torch.bfloat16)
    assert torch.equal(ggml.dequantize(ggml.quantize(x, ggml.BF16), ggml.BF16, x.shape, torch.bfloat16), x)
    y = torch.randn(8, 8)
    assert torch.equal(ggml.dequantize(ggml.quantize(y, ggml.F32), ggml.F32, y.shape), y)
