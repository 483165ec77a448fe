"""``load_fusion(float8=...)``: a bf16 file kept in float8, converted on the CPU before it reaches the device.

The device side is traced on the ``meta`` device (no memory): every conversion to float8 must read a CPU tensor,
and the bytes that arrive on the device must be the fp8 model's, not bf16 + fp8 (GPU_REVIEW #6: 32.6 GiB)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ovi_core.model.loader import fp8_state_dict, load_fusion, save_fusion, write_tiny_fusion
from ovi_core.quant.sources import fp8_eligible

F8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> str:
    return write_tiny_fusion(tmp_path_factory.mktemp("tiny8") / "model.safetensors", seed=3)


class _Moves(TorchDispatchMode):
    """Records each copy/conversion (input device, output device, output dtype) and the bytes of every tensor copied
    or converted onto the ``meta`` device (the data that arrives there; building the empty model on meta is not
    counted), never subtracting frees: a bound on what a GPU would hold at most during the load."""

    def __init__(self):
        super().__init__()
        self.copies: list[tuple[str, str, torch.dtype]] = []
        self.made = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            self.copies.append((src.device.type, out.device.type, out.dtype))
            if out.device.type == "meta" and func is torch.ops.aten._to_copy.default:
                self.made += out.numel() * out.element_size()
        return out


def _nbytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_float8_load_equals_converting_the_loaded_model(tiny_file, dtype):
    ref = load_fusion(tiny_file, dtype=dtype)
    want = fp8_state_dict(ref.state_dict())
    m = load_fusion(tiny_file, dtype=dtype, float8=F8)
    got = m.state_dict()
    assert set(got) == set(want)
    n8 = 0
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)) if v.dtype == F8 else torch.equal(got[k], v)
        n8 += v.dtype == F8
    assert n8 and n8 == sum(fp8_eligible(k) for k in want)
    assert m.compute_dtype == dtype
    x = torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    args = (x, torch.randn(1, 11, 20), torch.tensor([700.0]), torch.randn(1, 4, 32), torch.randn(1, 6, 32))
    with torch.no_grad():
        out = m(*args)
    assert out[0].dtype == dtype and torch.isfinite(out[0].float()).all()


def test_float8_is_converted_on_the_cpu_and_streamed_to_the_device(tiny_file):
    with _Moves() as new:
        m = load_fusion(tiny_file, dtype=torch.bfloat16, device="meta", float8=F8)
    to_f8 = [c for c in new.copies if c[2] == F8]
    assert to_f8 and all(src == "cpu" for src, _, _ in to_f8), "a float8 conversion read a device tensor"
    bf16_moved = [c for c in new.copies if c[0] == "cpu" and c[1] == "meta" and c[2] == torch.bfloat16]
    assert len(bf16_moved) == sum(not fp8_eligible(k) for k in m.state_dict())  # only norms and biases
    fp8_bytes = _nbytes(m)
    assert new.made == fp8_bytes  # all that is ever made on the device is the fp8 model
    assert fp8_bytes < 0.6 * _nbytes(load_fusion(tiny_file, dtype=torch.bfloat16, device="meta"))

    # the old way (load, then fp8_state_dict on the device) makes bf16 + fp8 there (both alive at once): the trace
    # sees it
    with _Moves() as old:
        b = load_fusion(tiny_file, dtype=torch.bfloat16, device="meta")
        sd = fp8_state_dict(b.state_dict())
    assert old.made > 2.4 * fp8_bytes and any(c[0] == "meta" and c[2] == F8 for c in old.copies)
    del sd


def test_float8_keeps_packed_files_as_they_are(tiny_file, tmp_path):
    f8_path = tmp_path / "model_fp8_e5m2.safetensors"
    save_fusion(load_fusion(tiny_file, dtype=torch.bfloat16), f8_path, dtype=torch.float8_e5m2)
    m = load_fusion(str(f8_path), dtype=torch.bfloat16, float8=F8)
    assert m.video_model.blocks[0].self_attn.q.weight.dtype == torch.float8_e5m2


def test_float8_rejects_other_dtypes(tiny_file):
    with pytest.raises(ValueError, match="float8 must be"):
        load_fusion(tiny_file, float8=torch.bfloat16)


def test_float8_from_a_pickle_file(tiny_file, tmp_path):
    ref = load_fusion(tiny_file, dtype=torch.bfloat16)
    pt = tmp_path / "model.pt"
    torch.save(ref.state_dict(), pt)
    want = fp8_state_dict(ref.state_dict())
    with _Moves() as moves:
        got = load_fusion(str(pt), dtype=torch.bfloat16, device="meta", float8=F8).state_dict()
    assert moves.made == sum(v.numel() * v.element_size() for v in want.values())
    assert all(src == "cpu" for src, _, dt in moves.copies if dt == F8)
    assert all(got[k].dtype == v.dtype for k, v in want.items())
    m = load_fusion(str(pt), dtype=torch.bfloat16, float8=F8).state_dict()
    assert all(torch.equal(m[k].view(torch.uint8), v.view(torch.uint8)) if v.dtype == F8 else torch.equal(m[k], v)
               for k, v in want.items())
