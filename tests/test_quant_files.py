"""`quantize` for every format on tiny weights: ComfyUI-GGUF layout, official names, strict load, error bound."""

import json

import gguf
import pytest
import torch
from quant_utils import CFG, forward, rel, write_source

from ovi_core.cli import main as cli
from ovi_core.io import checkpoints as ck
from ovi_core.model.loader import load_fusion
from ovi_core.quant import ggml
from ovi_core.quant.convert import quantize_file
from ovi_core.quant.tensor import QuantizedWeight

# rel-L2 of the DiT output against the bf16 file, per format (measured ~0.006/0.02/0.03/0.06/0.09)
BOUND = {"q8_0": 0.02, "q6_k": 0.05, "fp8_scaled": 0.06, "fp8": 0.15, "q4_k": 0.2}
EXT = {"fp8": "safetensors", "fp8_scaled": "safetensors", "q8_0": "gguf", "q6_k": "gguf", "q4_k": "gguf"}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("q") / "model.safetensors")
    write_source(path)
    return path


@pytest.fixture(scope="module")
def ref(src):
    return forward(load_fusion(src, dtype=torch.float32, config=CFG))


@pytest.mark.parametrize("fmt", list(BOUND))
def test_each_format_loads_strictly_within_its_bound(fmt, src, ref, tmp_path):
    out = str(tmp_path / f"m.{EXT[fmt]}")
    rep = quantize_file(src, out, format=fmt)
    assert rep["quantized"] > 0 and rep["bytes_out"] < rep["bytes_in"] * (1.6 if fmt != "q4_k" else 1.5)
    model = load_fusion(out, dtype=torch.float32, config=CFG)
    qv, qa = forward(model)
    ev, ea = rel(qv, ref[0]), rel(qa, ref[1])
    assert 0 < ev < BOUND[fmt] and 0 < ea < BOUND[fmt], (ev, ea)
    packed = [n for n, p in model.named_parameters() if isinstance(p, QuantizedWeight)]
    if fmt != "fp8":
        assert len(packed) == rep["quantized"]
        assert all(".blocks." in n for n in packed)


def test_gguf_follows_comfyui_gguf_conventions(src, tmp_path):
    out = str(tmp_path / "m.gguf")
    quantize_file(src, out, format="q4_k")
    reader = gguf.GGUFReader(out)
    f = reader.get_field("general.architecture")
    assert bytes(f.parts[f.data[-1]]).decode() == "ovi"
    assert reader.get_field("general.quantization_version") is not None
    official = ck.peek(src)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(official)  # official names, nothing renamed or dropped
    types = {n: int(t.tensor_type) for n, t in tensors.items()}
    assert types["video_model.blocks.0.self_attn.q.weight"] == ggml.Q4_K
    assert types["audio_model.blocks.1.ffn.2.weight"] == ggml.Q4_K
    for n, q in types.items():  # norms, biases, modulation, embeddings stay high precision
        if any(s in n for s in ("norm", "bias", "modulation", "embedding", "time_projection", "head.")):
            assert q in (ggml.F32, ggml.F16, ggml.BF16), n
        if len(official[n].shape) == 1 or "modulation" in n:
            assert q == ggml.F32, n
    # GGUF shapes are reversed; the 5-D patch embedding is stored 2-D with its shape in comfy.gguf.orig_shape
    q = tensors["video_model.blocks.0.ffn.0.weight"]
    assert tuple(int(v) for v in q.shape) == tuple(reversed(official["video_model.blocks.0.ffn.0.weight"].shape))
    pe = "video_model.patch_embedding.weight"
    field = reader.get_field("comfy.gguf.orig_shape." + pe)
    assert tuple(int(field.parts[i][0]) for i in field.data) == official[pe].shape
    assert len(tensors[pe].shape) == 2


def test_cli_quantize_and_inspect(src, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert cli.main(["quantize", src, str(out), "--format", "q8_0"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["format"] == "q8_0" and rep["types"]["Q8_0"] > 0
    assert cli.main(["inspect", str(out)]) == 0
    ins = json.loads(capsys.readouterr().out)
    assert ins["format"].startswith("GGUF Q8_0") and ins["loads_strictly"] and ins["component"] == "ovi-fusion"
    assert cli.main(["inspect", src]) == 0
    assert json.loads(capsys.readouterr().out)["format"].startswith("bfloat16")


def test_quantize_refuses_bad_requests(src, tmp_path):
    with pytest.raises(ValueError, match=r"\.gguf"):
        quantize_file(src, tmp_path / "m.safetensors", format="q4_k")
    with pytest.raises(ValueError, match="one of"):
        quantize_file(src, tmp_path / "m.gguf", format="q2_k")
    g = tmp_path / "m.gguf"
    quantize_file(src, g, format="q8_0")
    with pytest.raises(ValueError, match="already GGUF"):
        quantize_file(g, tmp_path / "n.gguf", format="q4_k")
    assert cli.main(["quantize", src, str(tmp_path / "x.gguf"), "--format", "fp8"]) == 2
    assert not (tmp_path / "x.gguf").exists()


def test_truncated_gguf_is_named(src, tmp_path):
    g = tmp_path / "m.gguf"
    quantize_file(src, g, format="q8_0")
    data = g.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="bad.gguf"):
        load_fusion(str(bad), dtype=torch.float32, config=CFG)
