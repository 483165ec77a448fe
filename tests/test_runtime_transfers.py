"""Host-to-device copies a forward asks for, counted on the meta device (the CPU stand-in for CUDA sync checks)."""

import torch
from quant_utils import CFG, inputs, write_source

from ovi_core.model.loader import load_fusion
from ovi_core.quant import ggml
from ovi_core.quant.convert import quantize_file
from ovi_core.runtime.transfers import TransferCounter


def test_counter_counts_copies_onto_a_device_only():
    cpu = torch.ones(3)
    with TransferCounter() as c:
        torch.tensor([0, 2, 4, 6], device="meta")  # Python data onto the device: counted
        torch.as_tensor(cpu, device="meta")  # a CPU tensor onto the device: counted
        cpu.to("meta")  # counted
        cpu.to(device="meta", dtype=torch.float16)  # counted
        torch.empty(3, device="meta").copy_(cpu)  # counted
        torch.tensor([1.0])  # stays on the host
        cpu.to(torch.float16)  # stays on the host
        torch.full((), 2.0, device="meta")  # a fill kernel, no copy
        torch.arange(4, device="meta")  # no copy
        torch.empty(3, device="meta").to("meta")  # already there
    assert c.count == 5, c.calls


def test_q6_k_dequantize_asks_for_no_copy():
    raw = ggml.quantize(torch.randn(2, 256), ggml.Q6_K).to("meta")
    with TransferCounter() as c:
        out = ggml.dequantize(raw, ggml.Q6_K, (2, 256))
    assert out.shape == (2, 256) and c.count == 0, c.calls


def test_q6_k_model_forward_asks_for_no_copy_after_the_first(tmp_path):
    """The first forward builds the RoPE tables (cached); later forwards, which run ~50 times per clip, copy
    nothing from the host (was one copy per Q6_K Linear call: 4 x 6 + 2 per forward here, ~600 at full size)."""
    src, gguf = str(tmp_path / "m.safetensors"), str(tmp_path / "m.gguf")
    write_source(src)
    quantize_file(src, gguf, format="q6_k")
    model = load_fusion(gguf, dtype=torch.float32, config=CFG).to("meta")
    video, audio, t, ctx = inputs()
    args = (video.to("meta"), audio.to("meta"), t.to("meta"), [c.to("meta") for c in ctx],
            [c.to("meta") for c in ctx])
    counts = []
    with torch.no_grad():
        for _ in range(2):
            with TransferCounter() as c:
                out = model(*args)
            counts.append(c.count)
    assert out[0].shape == video.shape and out[0].is_meta
    assert counts[1] == 0, c.calls


def test_full_size_forward_asks_for_one_copy():
    """The full 11.66 B DiT at 704x704x121 (batched CFG with skip-layer guidance) on the meta device: after the
    first forward (RoPE tables), one copy per forward: the skip-layer row index built from the CPU mask."""
    from ovi_core.model.config import OVI_11B
    from ovi_core.model.fusion import OviFusionModel

    model = OviFusionModel(OVI_11B, device="meta", dtype=torch.bfloat16).eval()
    video = torch.empty(2, 48, 31, 44, 44, device="meta", dtype=torch.bfloat16)
    audio = torch.empty(2, 157, 20, device="meta", dtype=torch.bfloat16)
    ctx = [torch.empty(120, OVI_11B.video.text_dim, device="meta", dtype=torch.bfloat16)] * 2
    t = torch.full((2,), 500.0, device="meta")
    counts = []
    with torch.no_grad(), model.cache_text_embeddings():
        for _ in range(2):
            with TransferCounter() as c:
                out = model(video, audio, t, ctx, ctx, slg_layer=11, slg_mask=torch.tensor([False, True]))
            counts.append(c.count)
    assert out[0].shape == video.shape
    assert counts[1] == 1, c.calls
