"""Hardening round 3 (issue 24): a LoRA for another model width, GGUF block scales that are NaN/Inf, and a GGUF
header with an absurd number of metadata keys: each refused through the CLI before any weights load."""

import time

import numpy as np
import pytest
import torch

PROMPT = "A man in a red coat says <S>Hello.<E> Audio: clear male voice."


def _run(weights, tmp_path, capsys, *extra, loads=False):
    from ovi_core.cli import main as cli

    args = ["generate", "--weights", weights, "--steps", "1", "--offline", "--out", str(tmp_path / "o.mp4"),
            "--prompt", PROMPT]
    try:
        rc = cli.main([*args, *extra])
    except SystemExit as e:  # argparse refusals
        rc = e.code
    err = capsys.readouterr().err
    assert ("Wan2.2_VAE" in err) == loads, err  # refused before any weights load (or, the control, gets there)
    return rc, err


def _lora(path, width):
    from safetensors.torch import save_file

    k = "video_model.blocks.0.self_attn.q"
    save_file({f"{k}.lora_down.weight": torch.zeros(4, width), f"{k}.lora_up.weight": torch.zeros(width, 4),
               f"{k}.alpha": torch.tensor(4.0)}, str(path))
    return str(path)


def _fusion_dim(weights):
    from ovi_core.io import checkpoints as ck
    from ovi_core.io.weights import resolve_weights

    shapes = ck.peek(resolve_weights(weights, download=False).fusion)
    return int(shapes["video_model.blocks.0.self_attn.q.weight"].shape[1])


def test_lora_for_another_width_is_refused_before_loading(broken_weights, tmp_path, capsys):
    """A LoRA whose lora_down in_features differ from the fusion model's width passed every check up front and
    failed only after the DiT had loaded."""
    dim = _fusion_dim(broken_weights)
    ok = _lora(tmp_path / "fits.safetensors", dim)
    _run(broken_weights, tmp_path, capsys, "--lora", ok, loads=True)  # the control gets as far as loading
    bad = _lora(tmp_path / "wide.safetensors", dim + 8)
    rc, err = _run(broken_weights, tmp_path, capsys, "--lora", bad)
    assert rc == 2, err
    assert "wide.safetensors" in err and "does not fit" in err and str(dim + 8) in err and str(dim) in err, err


def _q8_gguf(weights, path):
    from ovi_core.io.weights import resolve_weights
    from ovi_core.quant.convert import quantize_file

    quantize_file(resolve_weights(weights, download=False).fusion, str(path), format="q8_0")
    return str(path)


def test_gguf_with_nan_block_scales_is_refused_before_loading(broken_weights, tmp_path, capsys):
    """A Q8_0 block whose fp16 scale is NaN (or Inf) loaded and sampled NaN frames without a word."""
    from ovi_core.quant import ggml
    from ovi_core.quant.gguf_file import check_gguf_values, read_gguf_index

    ok = _q8_gguf(broken_weights, tmp_path / "ok.gguf")
    check_gguf_values(ok)
    _run(broken_weights, tmp_path, capsys, "--fusion", ok, loads=True)  # the control gets as far as loading
    index, _ = read_gguf_index(ok)
    name, t = next((n, t) for n, t in index.items() if t.qtype == ggml.Q8_0)
    for label, bits in (("nan", b"\x00\x7e"), ("inf", b"\x00\x7c")):
        bad = tmp_path / f"{label}.gguf"
        data = bytearray(open(ok, "rb").read())
        block = t.offset + (t.nbytes // 34 // 2) * 34  # a block in the middle of the tensor: its fp16 scale
        data[block:block + 2] = bits
        bad.write_bytes(bytes(data))
        rc, err = _run(broken_weights, tmp_path, capsys, "--fusion", str(bad))
        assert rc == 2 and f"{label}.gguf" in err and name in err and "NaN or infinite" in err, err
    from ovi_core.model.loader import load_fusion

    with pytest.raises(ValueError, match=rf"{name}.*NaN or infinite"):  # the node path: refused as it loads
        load_fusion(str(bad), dtype=torch.float32)


def test_gguf_with_a_huge_header_is_refused_fast(tmp_path):
    """400,000 metadata keys (a 13 MB header) took the reader over 90 s to refuse; the counts are capped first."""
    import gguf

    from ovi_core.quant.gguf_file import ARCH, MAX_KV, read_gguf_index

    path = tmp_path / "keys.gguf"
    w = gguf.GGUFWriter(path=None, arch=ARCH)
    for i in range(MAX_KV + 10):
        w.add_uint32(f"junk.{i}", i)
    w.add_tensor_info("blocks.0.ffn.0.weight", (4, 128), np.dtype(np.uint8), 512, raw_dtype=0)
    w.write_header_to_file(path=str(path))
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.write_tensor_data(np.zeros((4, 128), np.uint8))
    w.close()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"keys\.gguf.*metadata keys"):
        read_gguf_index(path)
    assert time.perf_counter() - t0 < 1.0
