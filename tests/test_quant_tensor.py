"""QuantizedWeight: packed in memory, expanded by the layer's cast, moved as packed bytes."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ovi_core.quant import ggml
from ovi_core.quant.tensor import QuantizedWeight


def _layer():
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(0))
    lin = nn.Linear(256, 32, bias=False)
    lin.weight = nn.Parameter(QuantizedWeight.from_ggml(ggml.quantize(w, ggml.Q6_K), ggml.Q6_K, w.shape),
                              requires_grad=False)
    return lin, ggml.dequantize(ggml.quantize(w, ggml.Q6_K), ggml.Q6_K, w.shape)


def test_parameter_semantics():
    lin, _ = _layer()
    p = lin.weight
    assert isinstance(p, nn.Parameter) and isinstance(p, QuantizedWeight)
    assert p.dtype == torch.uint8 and p.qshape == (32, 256)
    assert p.numel() * p.element_size() == ggml.nbytes((32, 256), ggml.Q6_K)  # memory counts packed bytes
    assert isinstance(lin.state_dict()["weight"], QuantizedWeight)


def test_cast_dequantizes_and_linear_matches():
    lin, w = _layer()
    x = torch.randn(3, 256)
    assert torch.equal(lin.weight.to(torch.float32), w)
    assert lin.weight.to(torch.bfloat16).dtype == torch.bfloat16
    assert torch.allclose(F.linear(x, lin.weight), x @ w.T)  # used directly: expanded to x's dtype
    with pytest.raises(TypeError):
        lin.weight.to(torch.int32)


def test_moves_keep_the_packed_form():
    lin, w = _layer()
    lin.to("cpu")
    lin.to(torch.bfloat16)  # module dtype casts skip integer storage: still packed, still exact
    assert isinstance(lin.weight, QuantizedWeight) and torch.equal(lin.weight.to(torch.float32), w)
    d = lin.weight.data
    assert isinstance(d, QuantizedWeight) and d.qshape == (32, 256)
    lin.weight.data = d.to("cpu").clone()  # what BlockSwapper does
    assert isinstance(lin.weight, QuantizedWeight) and torch.equal(lin.weight.to(torch.float32), w)
    c = copy.deepcopy(lin)
    assert isinstance(c.weight, nn.Parameter) and torch.equal(c.weight.to(torch.float32), w)
    assert c.weight.raw().data_ptr() != lin.weight.raw().data_ptr()


def test_scaled_fp8():
    w = torch.randn(16, 16)
    w8 = (w / 0.01).to(torch.float8_e4m3fn)
    q = QuantizedWeight.from_fp8(w8, 0.01)
    assert q.format_name == "fp8_scaled" and q.dtype == torch.uint8
    assert torch.equal(q.to(torch.float32), w8.float() * 0.01)
