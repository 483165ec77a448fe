"""fp8 compute through ``torch._scaled_mm``: the same code run on CPU through a stand-in with the CUDA kernel's
argument rules (bias vs float32 output, row-wise scales, tuple results), its memory and its host copies."""

import pytest
import torch
import torch.nn.functional as F
from quant_utils import CFG, inputs, rel, write_source
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from ovi_core.model.loader import load_fusion
from ovi_core.quant import fp8_compute as fc
from ovi_core.quant.fp8 import to_scaled_fp8
from ovi_core.quant.kijai import write_kijai_files
from ovi_core.runtime.transfers import TransferCounter

E4 = torch.float8_e4m3fn


def _weights(n=48, k=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.1
    w8, s = to_scaled_fp8(w)
    return w8, s, torch.randn(n, generator=g)


def test_reference_has_the_cuda_rules():
    w8, _, bias = _weights()
    x8 = torch.randn(20, 64).to(E4)
    one = torch.ones(())
    assert fc.scaled_mm_reference(x8, w8.t(), one, one, out_dtype=torch.bfloat16).shape == (20, 48)  # M free
    with pytest.raises(RuntimeError, match="Bias is not supported when out_dtype is set to Float32"):
        fc.scaled_mm_reference(x8, w8.t(), one, one, bias=bias, out_dtype=torch.float32)
    with pytest.raises(RuntimeError, match="Bias must be"):
        fc.scaled_mm_reference(x8, w8.t(), one, one, bias=bias, out_dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="row-wise"):
        fc.scaled_mm_reference(x8, w8.t(), torch.ones(20, 1), torch.ones(1, 48), out_dtype=torch.float32)
    with pytest.raises(RuntimeError, match="column-major"):
        fc.scaled_mm_reference(x8, w8.t().contiguous(), one, one, out_dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="divisible by 16"):
        fc.scaled_mm_reference(x8[:, :40], w8[:, :40].t(), one, one, out_dtype=torch.bfloat16)


@pytest.mark.parametrize(("dtype", "rowwise"), [(torch.float32, False), (torch.bfloat16, False),
                                                (torch.bfloat16, True)])
def test_linear_shapes_dtypes_and_bias(dtype, rowwise):
    """float32 output with a bias (which the kernel refuses) adds the bias afterwards; M = 2 x 157 audio rows."""
    w8, s, bias = _weights()
    x = torch.randn(2, 157, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    sb = fc.weight_scale(s, 48, x.device, rowwise=rowwise)
    out = fc._scaled_mm_linear(x, w8, sb, bias, rowwise=rowwise, mm=fc.scaled_mm_reference)
    assert out.shape == (2, 157, 48) and out.dtype == dtype
    want = F.linear(x.float(), w8.float() * s, bias)
    assert rel(out, want) < 0.06  # fp8 activations (3 mantissa bits)
    no_bias = fc._scaled_mm_linear(x, w8, sb, None, rowwise=rowwise, mm=fc.scaled_mm_reference)
    assert torch.allclose((out.float() - no_bias.float()).mean(dim=(0, 1)), bias, atol=0.05)


def test_tuple_result_of_old_torch_is_unpacked():
    w8, s, bias = _weights()
    x = torch.randn(4, 64, dtype=torch.bfloat16)

    def old_torch(*args, **kwargs):  # PyTorch < 2.4 returned (out, amax)
        return fc.scaled_mm_reference(*args, **kwargs), torch.zeros(())

    sb = fc.weight_scale(s, 48, x.device, rowwise=False)
    got = fc._scaled_mm_linear(x, w8, sb, bias, rowwise=False, mm=old_torch)
    assert torch.equal(got, fc._scaled_mm_linear(x, w8, sb, bias, rowwise=False, mm=fc.scaled_mm_reference))


class _Float32Outputs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("rowwise", [False, True])
def test_activation_quantization_makes_no_float32_copy(rowwise):
    x = torch.randn(64, 256, dtype=torch.bfloat16)
    with _Float32Outputs() as mode:
        x8, scale = fc.quantize_rows(x, rowwise=rowwise)
    assert mode.largest <= 64  # only the per-row maxima / scales, never [64, 256]
    assert x8.dtype == E4 and scale.shape == ((64, 1) if rowwise else ())
    assert rel(x8.float() * scale, x) < 0.05


def test_rowwise_only_on_hopper_with_bf16_output():
    assert fc.use_rowwise(capability=(9, 0), out_dtype=torch.bfloat16)
    assert not fc.use_rowwise(capability=(9, 0), out_dtype=torch.float32)
    assert not fc.use_rowwise(capability=(8, 9), out_dtype=torch.bfloat16)
    assert not fc.use_rowwise(capability=None, out_dtype=torch.bfloat16)


def _inputs(device="cpu"):
    """64 video tokens and 10 audio tokens: both towers take the fp8 path (any row count)."""
    _, audio, t, ctx = inputs()
    video = torch.randn(1, 48, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    return (video.to(device), audio.to(device), t.to(device), [c.to(device) for c in ctx],
            [c.to(device) for c in ctx])


def forward(model):
    with torch.no_grad():
        return model(*_inputs())


@pytest.fixture(scope="module")
def fp8_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp8c")
    src = str(d / "model.safetensors")
    write_source(src)
    return write_kijai_files(load_file(src), d, fp8_scaled=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_emulated_model_forward(fp8_pair, dtype):
    """The whole DiT through the ``_scaled_mm`` path (emulated): close to the upcasting forward; every fp8
    Linear built its weight scale once."""
    model = load_fusion(fp8_pair, dtype=dtype, config=CFG)
    want = forward(model)
    n = fc.enable_fp8_compute(model, emulate=True)
    got = forward(model)
    used = [m for m in model.modules() if m.__dict__.get("_fp8_scale_b")]
    assert n > 0 and len(used) == n  # every fp8 Linear of both towers took the path
    assert got[0].dtype == dtype and rel(got[0], want[0]) < 0.1 and rel(got[1], want[1]) < 0.1
    fc.disable_fp8_compute(model)
    assert not any("_fp8_scale_b" in m.__dict__ for m in model.modules())
    assert torch.equal(forward(model)[0], want[0])


def test_fp8_forward_requests_no_host_copies(fp8_pair):
    """On the meta device (standing in for a GPU), a second forward asks for no host-to-device copy: the
    weight scales are device tensors built once (was ``torch.tensor(scale, device=...)`` per Linear call)."""
    model = load_fusion(fp8_pair, dtype=torch.bfloat16, config=CFG).to("meta")
    fc.enable_fp8_compute(model, emulate=True)
    args = _inputs("meta")
    counts = []
    with torch.no_grad():
        for _ in range(2):
            with TransferCounter() as c:
                model(*args)
            counts.append(c.count)
    assert any(m.__dict__.get("_fp8_scale_b") for m in model.modules())
    assert counts[1] == 0, c.calls


@pytest.mark.parametrize("rows", [2 * 15004, 2 * 157])
def test_real_scaled_mm_accepts_the_calls_at_full_size(rows):
    """``torch._scaled_mm``'s own meta registration (its shape, layout and scale checks) on meta tensors of the
    ``ffn.2`` matmul at 704x704 (video rows) and of the audio rows: per tensor, row-wise, float32 with a bias."""
    x = torch.empty(rows, 14336, dtype=torch.bfloat16, device="meta")
    w8 = torch.empty(3072, 14336, dtype=E4, device="meta")
    bias = torch.empty(3072, dtype=torch.bfloat16, device="meta")
    for rowwise in (False, True):
        y = fc._scaled_mm_linear(x, w8, fc.weight_scale(0.01, 3072, x.device, rowwise=rowwise), bias,
                                 rowwise=rowwise)
        assert y.shape == (rows, 3072) and y.dtype == torch.bfloat16
    y = fc._scaled_mm_linear(x.float(), w8, fc.weight_scale(0.01, 3072, x.device, rowwise=False), bias.float(),
                             rowwise=False)
    assert y.shape == (rows, 3072) and y.dtype == torch.float32
