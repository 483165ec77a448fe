"""The ``operations`` argument (issue #20 item 1): Ovi's networks built on another layer namespace (as ComfyUI passes
``comfy.ops.manual_cast``) compute exactly what the default (plain ``torch.nn``) computes; ComfyUI's per-weight
functions are honoured on a copy; packed weights survive the way ComfyUI moves a weight.

The ComfyUI-like namespace here mimics ``comfy.ops.manual_cast`` (subclasses of ``torch.nn``'s classes that skip
initialisation and carry ``comfy_cast_weights``, ``weight_function``, ``bias_function``); the real one is exercised on
the hosts by ``tests/test_comfy_host.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ovi_core.model import tower
from ovi_core.model.loader import load_fusion, write_tiny_fusion
from ovi_core.quant.tensor import QuantizedWeight
from ovi_core.runtime import ops


class _Cast:
    comfy_cast_weights = True
    weight_function: list = []
    bias_function: list = []

    def reset_parameters(self):
        return None


class ComfyLikeOps:
    class Linear(_Cast, nn.Linear):
        pass

    class Conv1d(_Cast, nn.Conv1d):
        pass

    class Conv3d(_Cast, nn.Conv3d):
        pass

    class LayerNorm(_Cast, nn.LayerNorm):
        pass

    class RMSNorm(_Cast, nn.RMSNorm):
        pass

    class Embedding(_Cast, nn.Embedding):
        pass


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_tiny_fusion(tmp_path_factory.mktemp("ops") / "tiny.safetensors", seed=5)


def _inputs(model, b=2):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(b, 48, 3, 4, 4, generator=g)
    a = torch.randn(b, 8, 20, generator=g)
    ctx = torch.randn(b, 5, model.config.video.text_dim, generator=g)
    return v, a, torch.tensor([700.0, 250.0][:b]), ctx


def _run(model):
    v, a, t, ctx = _inputs(model)
    with torch.no_grad():
        return model(v, a, t, ctx, ctx, first_frame_clean=True, slg_layer=1, slg_mask=torch.tensor([False, True]))


def test_default_is_plain_torch_and_bad_operations_are_refused():
    assert ops.resolve(None) is ops.TorchOps
    layers = tower.layers(None)
    assert issubclass(layers.Linear, nn.Linear) and issubclass(layers.LayerNorm, nn.LayerNorm)
    assert issubclass(layers.RMSNorm, nn.RMSNorm) and issubclass(layers.ChannelLastConv1d, nn.Conv1d)
    assert tower.Linear is layers.Linear  # the module-level names are the default layers
    assert tower.layers(ComfyLikeOps) is tower.layers(ComfyLikeOps)  # one set of classes per namespace

    class Half:
        Linear = nn.Linear

    with pytest.raises(TypeError, match="lacks the layer classes"):
        tower.layers(Half)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_comfy_like_operations_are_bit_identical(tiny_file, dtype):
    plain = load_fusion(tiny_file, dtype=dtype)
    comfy = load_fusion(tiny_file, dtype=dtype, operations=ComfyLikeOps)
    q = comfy.video_model.blocks[0].self_attn.q
    assert isinstance(q, ComfyLikeOps.Linear) and hasattr(q, "comfy_cast_weights")
    assert isinstance(comfy.audio_model.patch_embedding[0], ComfyLikeOps.Conv1d)
    assert isinstance(comfy.video_model.patch_embedding, ComfyLikeOps.Conv3d)
    assert isinstance(comfy.video_model.blocks[0].self_attn.norm_q, ComfyLikeOps.RMSNorm)
    assert isinstance(comfy.video_model.blocks[0].cross_attn.pre_attn_norm_fusion, ComfyLikeOps.LayerNorm)
    assert ops.uses_streaming_ops(comfy) and not ops.uses_streaming_ops(plain)
    for x, y in zip(_run(plain), _run(comfy), strict=True):
        assert x.dtype == dtype
        assert torch.equal(x, y)


def test_weight_functions_apply_to_a_copy(tiny_file):
    """ComfyUI's lowvram LoRA patches arrive as ``weight_function``: applied at call time, the stored weight
    untouched."""
    model = load_fusion(tiny_file, dtype=torch.float32, operations=ComfyLikeOps)
    ref = _run(model)
    lin = model.video_model.blocks[0].cross_attn.o
    norm = model.audio_model.blocks[1].self_attn.norm_k
    stored_w, stored_n = lin.weight.detach().clone(), norm.weight.detach().clone()
    lin.weight_function = [lambda w: w * 2]
    norm.weight_function = [lambda w: w + 0.5]
    patched = _run(model)
    assert torch.equal(lin.weight, stored_w) and torch.equal(norm.weight, stored_n)
    del lin.weight_function, norm.weight_function  # back to the class default: no function
    with torch.no_grad():
        lin.weight.mul_(2)
        norm.weight.add_(0.5)
    merged = _run(model)
    assert not torch.equal(patched[0], ref[0])
    for x, y in zip(patched, merged, strict=True):
        assert torch.equal(x, y)


def test_cast_param_returns_the_stored_tensor_when_nothing_to_do():
    lin = tower.Linear(4, 3)
    x = torch.randn(2, 4)
    assert ops.cast_param(lin, "weight", x) is lin.weight
    assert ops.cast_param(lin, "weight", x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert ops.cast_param(tower.LayerNorm(4), "weight", x) is None  # not affine


def test_packed_weight_survives_comfy_style_move():
    """``comfy.model_management.cast_to`` moves a weight as ``empty_like(w, device=d).copy_(w)`` and casts a
    weight that has functions with ``.to(dtype, copy=True)``: both keep the packed bytes."""
    w = torch.randn(8, 16).to(torch.float8_e4m3fn)
    q = QuantizedWeight.from_fp8(w, 0.5)
    moved = torch.empty_like(q, device="cpu")
    assert isinstance(moved, QuantizedWeight) and moved.qshape == q.qshape
    moved.copy_(q)
    want = w.to(torch.float32) * 0.5
    assert torch.equal(moved.to(torch.float32), want)
    copy = q.to(device="cpu", copy=True)
    assert isinstance(copy, QuantizedWeight) and copy.raw().data_ptr() != q.raw().data_ptr()
    assert q.to("cpu") is q
    assert torch.equal(q.to(dtype=torch.float32, copy=True), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_umt5_on_comfy_like_operations_is_bit_identical(dtype):
    """UMT5 (transformers' network) with its Linear / Embedding / norm layers swapped for ``operations``' classes
    computes exactly what transformers' own layers compute (the recorded golden weights)."""
    pytest.importorskip("transformers")
    import os

    from conftest import DATA

    from ovi_core.text import umt5

    path = os.path.join(DATA, "umt5.weights.safetensors")
    io = __import__("safetensors.torch", fromlist=["load_file"]).load_file(os.path.join(DATA, "umt5.io.safetensors"))
    outs = []
    for operations in (None, ComfyLikeOps):
        model, cfg, _ = umt5.load_umt5_model(path, dtype=dtype, operations=operations)
        enc = umt5.TextEncoder(model, config=cfg, tokenizer=None)
        with torch.no_grad():
            outs.append(enc(io["inputs.ids"], io["inputs.mask"]))
        if operations is not None:
            assert isinstance(model.shared, ComfyLikeOps.Embedding) and model.shared is model.encoder.embed_tokens
            attn = model.encoder.block[0].layer[0]
            assert isinstance(attn.SelfAttention.q, ComfyLikeOps.Linear)
            assert isinstance(attn.SelfAttention.relative_attention_bias, ComfyLikeOps.Embedding)
            assert isinstance(attn.layer_norm, ComfyLikeOps.RMSNorm)
            assert not any(type(m) in (nn.Linear, nn.Embedding) for m in model.modules())
    assert outs[0].dtype == dtype
    assert torch.equal(outs[0], outs[1])


def test_cast_param_applies_a_comfy_scaled_fp8_scale():
    """0.3.64's scaled-fp8 Linear keeps ``scale_weight`` beside the float8 weight; the weight used is
    ``weight.to(dtype) * scale_weight`` (its own forward's order)."""
    from ovi_core.runtime.ops import cast_param

    lin = torch.nn.Linear(8, 4)
    w8 = (torch.randn(4, 8) * 100).to(torch.float8_e4m3fn)
    lin.weight = torch.nn.Parameter(w8, requires_grad=False)
    lin.scale_weight = torch.nn.Parameter(torch.tensor(0.003), requires_grad=False)
    x = torch.randn(2, 8)
    assert torch.equal(cast_param(lin, "weight", x), w8.float() * torch.tensor(0.003))
    assert torch.equal(cast_param(lin, "bias", x), lin.bias)  # the scale is the weight's only


class _Packed(torch.Tensor):
    """A stand-in for another library's quantized tensor (comfy_kitchen's QuantizedTensor): casts keep it packed,
    ``dequantize()`` gives the weight with its scale applied."""

    @staticmethod
    def __new__(cls, q, scale):
        t = torch.Tensor._make_subclass(cls, q, False)
        t.q, t.s = q, scale
        return t

    def detach(self, *args, **kwargs):  # nn.Parameter(t) keeps the same object, as QuantizedTensor's detach keeps its data
        return self

    def dequantize(self):
        return self.q.float() * self.s


def test_cast_param_dequantizes_a_foreign_quantized_tensor():
    from ovi_core.runtime.ops import cast_param

    lin = torch.nn.Linear(8, 4)
    q = (torch.randn(4, 8) * 100).to(torch.float8_e4m3fn)
    lin.weight = torch.nn.Parameter(_Packed(q, 0.01), requires_grad=False)
    got = cast_param(lin, "weight", torch.randn(2, 8, dtype=torch.bfloat16))
    assert type(got) is torch.Tensor and torch.equal(got, (q.float() * 0.01).bfloat16())
