"""Ovi GGUFs for ComfyUI-GGUF's "Unet Loader (GGUF)", without ComfyUI: ``native-convert`` on a GGUF (rooted names,
architecture ``wan``, packed bytes unchanged, BF16 written as exact F32), and the layers' use of a ComfyUI-GGUF
layer's ``get_weight`` (the real loader runs in tests/test_native_host_loaders.py on both ComfyUI hosts)."""

from __future__ import annotations

import gguf
import pytest
import torch
import torch.nn.functional as F

from ovi_core.cli.native import convert
from ovi_core.model import rooted
from ovi_core.model.loader import random_fusion, save_fusion
from ovi_core.model.tower import layers
from ovi_core.quant import ggml
from ovi_core.quant.convert import quantize_file
from ovi_core.quant.gguf_file import read_gguf_index, read_raw


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    from quant_utils import CFG

    d = tmp_path_factory.mktemp("native_gguf")
    src = str(d / "m.safetensors")
    save_fusion(random_fusion(CFG, seed=0), src, dtype=torch.bfloat16)
    official = str(d / "m.gguf")
    quantize_file(src, official, format="q4_k")
    return official, convert(official, str(d / "m_native.gguf"))


def test_native_gguf_renames_keeps_bytes_and_widens_bf16(ggufs):
    official, native = ggufs
    a, _ = read_gguf_index(official)
    b, meta = read_gguf_index(native)
    assert set(b) == {rooted.to_rooted(k) for k in a}
    assert rooted.looks_rooted(b) and rooted.has_audio_tower(b)
    assert gguf.GGUFReader(native).get_field("general.architecture").contents() == "wan"  # an independent reader
    assert meta["ovi.layout"].startswith("native")
    kinds = {t.qtype for t in a.values()}
    assert ggml.Q4_K in kinds and ggml.BF16 in kinds  # both paths are exercised
    with open(official, "rb") as fa, open(native, "rb") as fb:
        for k, t in a.items():
            u = b[rooted.to_rooted(k)]
            assert u.shape == t.shape
            ra, rb = read_raw(fa, t), read_raw(fb, u)
            if t.qtype == ggml.BF16:
                assert u.qtype == ggml.F32
                assert torch.equal(ggml.dequantize(ra, ggml.BF16, t.shape), ggml.dequantize(rb, ggml.F32, u.shape))
            else:
                assert u.qtype == t.qtype and torch.equal(ra, rb)


def test_native_convert_refuses_mismatched_names(ggufs, tmp_path):
    official, native = ggufs
    with pytest.raises(ValueError, match=r"\.gguf"):
        convert(official, str(tmp_path / "out.safetensors"))
    with pytest.raises(ValueError, match="official names"):
        convert(native, str(tmp_path / "again.gguf"))


class _GGMLTensor(torch.Tensor):
    """A stand-in for ComfyUI-GGUF's ``GGMLTensor`` (ops.py @795e451): the raw bytes as a tensor, plus
    ``tensor_type`` and ``tensor_shape``."""

    @staticmethod
    def __new__(cls, raw, *, tensor_type, tensor_shape):
        t = torch.Tensor._make_subclass(cls, raw, False)
        t.tensor_type, t.tensor_shape = tensor_type, tensor_shape
        return t

    def detach(self, *args, **kwargs):  # as GGMLTensor: nn.Parameter(t) keeps the tensor and its attributes
        return self


def test_linear_expands_a_ggml_weight_through_the_layers_get_weight():
    """A layer of ComfyUI-GGUF's GGMLOps carries ``get_weight(tensor, dtype)``; Ovi's layers must use it (a plain
    cast of the GGMLTensor would read its bytes as numbers)."""
    calls = []

    class GGMLLinear(torch.nn.Linear):  # the shape of GGMLOps.Linear: weight/bias GGMLTensors, get_weight expands
        def get_weight(self, tensor, dtype):
            calls.append(dtype)
            raw = tensor.as_subclass(torch.Tensor).view(torch.uint8)  # get_weight returns a plain tensor
            return ggml.dequantize(raw, tensor.tensor_type, tensor.tensor_shape, dtype)

    class Ops:
        Linear = GGMLLinear
        Conv1d, Conv3d = torch.nn.Conv1d, torch.nn.Conv3d
        LayerNorm, RMSNorm, Embedding = torch.nn.LayerNorm, torch.nn.RMSNorm, torch.nn.Embedding

    lin = layers(Ops).Linear(64, 8)
    w, b = torch.randn(8, 64), torch.randn(8)
    qw = _GGMLTensor(ggml.quantize(w, ggml.Q8_0), tensor_type=ggml.Q8_0, tensor_shape=w.shape)
    qb = _GGMLTensor(ggml.quantize(b, ggml.F32), tensor_type=ggml.F32, tensor_shape=b.shape)
    lin.weight = torch.nn.Parameter(qw, requires_grad=False)
    lin.bias = torch.nn.Parameter(qb, requires_grad=False)
    x = torch.randn(3, 64)
    y = lin(x)
    want = F.linear(x, ggml.dequantize(ggml.quantize(w, ggml.Q8_0), ggml.Q8_0, w.shape), b)
    assert calls == [torch.float32, torch.float32]
    assert type(y) is torch.Tensor and torch.equal(y, want)
