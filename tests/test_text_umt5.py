"""UMT5 text encoder: manifest, golden numbers, Wan/HF/fp8 layouts, tiny writer, tokenization, errors."""

import hashlib
import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import identify
from ovi_core.text import umt5
from ovi_core.text.tokenizer import UMT5Tokenizer, clean_text

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLD_W = os.path.join(DATA, "umt5.weights.safetensors")
GOLD_IO = os.path.join(DATA, "umt5.io.safetensors")

# Written independently of ovi_core.text.umt5: Wan name -> Hugging Face (ComfyUI) name.
_BLOCK_MAP = {
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm1.weight": "layer.0.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
}


def to_hf(sd):
    out = {}
    for k, v in sd.items():
        if k == "token_embedding.weight":
            out["shared.weight"] = v
        elif k == "norm.weight":
            out["encoder.final_layer_norm.weight"] = v
        else:
            _, i, rest = k.split(".", 2)
            out[f"encoder.block.{i}.{_BLOCK_MAP[rest]}"] = v
    return out


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def golden():
    return load_file(GOLD_W), load_file(GOLD_IO)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_te")
    umt5.write_tiny_text_encoder(d, seed=0)
    return str(d)


def run_ids(path, ids, mask, dtype=torch.float32):
    model, cfg, _ = umt5.load_umt5_model(path, dtype=dtype)
    enc = umt5.TextEncoder(model, config=cfg, tokenizer=None)
    with torch.no_grad():
        return enc(ids, mask)


# ---------------------------------------------------------------------------------------------- shapes


def test_full_size_shapes_equal_manifest():
    with open(os.path.join(DATA, "manifests", "umt5_xxl_encoder.json")) as f:
        manifest = json.load(f)
    shapes = umt5.full_size_shapes()
    assert shapes == manifest["keys"]
    assert len(shapes) == manifest["count"] == 242
    assert umt5.umt5_config_from_shapes(manifest["keys"]) == umt5.UMT5_XXL
    assert umt5.shapes_for(manifest["keys"]) == manifest["keys"]


def test_cli_keys_umt5(capsys):
    from ovi_core.cli.main import main

    assert main(["keys", "umt5"]) == 0
    with open(os.path.join(DATA, "manifests", "umt5_xxl_encoder.json")) as f:
        assert json.loads(capsys.readouterr().out) == json.load(f)["keys"]


def test_shapes_for_hf_naming_and_comfy_extras():
    wan = umt5.full_size_shapes()
    hf = to_hf(wan)
    hf["spiece_model"] = [4548000]
    hf["scaled_fp8"] = [0]
    hf["encoder.block.0.layer.0.SelfAttention.q.scale_weight"] = []
    expected = umt5.shapes_for(hf)
    assert {k: list(v) for k, v in hf.items()} == expected
    assert umt5.umt5_config_from_shapes(hf) == umt5.UMT5_XXL
    # a scale for a weight that does not exist is not accepted
    bad = dict(hf, **{"encoder.block.99.layer.0.SelfAttention.q.scale_weight": []})
    assert "encoder.block.99.layer.0.SelfAttention.q.scale_weight" not in umt5.shapes_for(bad)
    with pytest.raises(ValueError, match="Not a UMT5"):
        umt5.shapes_for({"conv1.weight": [3, 3]})


def test_heads_are_read_from_position_bias_table(golden):
    w, _ = golden
    cfg = umt5.umt5_config_from_shapes({k: v.shape for k, v in w.items()})
    with open(os.path.join(DATA, "umt5.json")) as f:
        ref = json.load(f)["config"]
    for k, v in ref.items():
        assert getattr(cfg, k) == v, k


# ---------------------------------------------------------------------------------------------- numerics


def test_golden_umt5_reproduced(golden):
    _, io = golden
    ids, mask = io["inputs.ids"], io["inputs.mask"]
    out = run_ids(GOLD_W, ids, mask)
    real = mask.bool()
    ref = io["outputs.hidden"]
    assert rel_err(out[real], ref[real]) < 1e-5
    # a structural change (e.g. the FFN gate on the other branch) must be caught
    w, _ = golden
    swapped = dict(w)
    for i in range(2):
        swapped[f"blocks.{i}.ffn.gate.0.weight"], swapped[f"blocks.{i}.ffn.fc1.weight"] = (
            w[f"blocks.{i}.ffn.fc1.weight"], w[f"blocks.{i}.ffn.gate.0.weight"])
    model = umt5.build_umt5(umt5.umt5_config_from_shapes(swapped), device="cpu")
    hf, _ = umt5.convert_to_hf(dict(swapped), dtype=torch.float32)
    model.load_state_dict(hf, strict=True)
    with torch.no_grad():
        bad = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert rel_err(bad[real], ref[real]) > 1e-2


def test_wan_and_hf_files_give_identical_embeddings(golden, tmp_path):
    w, io = golden
    hf_path = str(tmp_path / "umt5_hf.safetensors")
    save_file(to_hf(w), hf_path)
    a = run_ids(GOLD_W, io["inputs.ids"], io["inputs.mask"])
    b = run_ids(hf_path, io["inputs.ids"], io["inputs.mask"])
    assert torch.equal(a, b)
    # HF file that also stores the tied embedding under its second name
    both = to_hf(w)
    both["encoder.embed_tokens.weight"] = both["shared.weight"].clone()
    save_file(both, str(tmp_path / "both.safetensors"))
    c = run_ids(str(tmp_path / "both.safetensors"), io["inputs.ids"], io["inputs.mask"])
    assert torch.equal(a, c)
    # HF names without the "encoder." prefix
    bare = {k.removeprefix("encoder."): v for k, v in to_hf(w).items()}
    save_file(bare, str(tmp_path / "bare.safetensors"))
    d = run_ids(str(tmp_path / "bare.safetensors"), io["inputs.ids"], io["inputs.mask"])
    assert torch.equal(a, d)


def test_wan_named_scaled_fp8_file(golden, tmp_path):
    w, io = golden
    out, scale = dict(w), torch.tensor(0.01)
    out["blocks.0.attn.q.weight"] = (w["blocks.0.attn.q.weight"] / scale).to(torch.float8_e4m3fn)
    out["blocks.0.attn.q.scale_weight"] = scale
    path = str(tmp_path / "umt5-xxl-enc-fp8_e4m3fn_scaled.safetensors")
    save_file(out, path)
    assert umt5.shapes_for({k: v.shape for k, v in out.items()}) == {k: list(v.shape) for k, v in out.items()}
    model, _, _ = umt5.load_umt5_model(path, dtype=torch.float32)
    got = model.state_dict()["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert torch.equal(got, out["blocks.0.attn.q.weight"].float() * scale)


def _fp8_file(w, path, *, scaled):
    hf = to_hf(w)
    out, expect = {}, {}
    for k, v in hf.items():
        is_linear = v.dim() == 2 and "relative_attention_bias" not in k and k != "shared.weight"
        if not is_linear:
            out[k] = v.to(torch.float16)
            expect[k] = out[k].float()
            continue
        if scaled:
            scale = v.abs().max() / 448.0
            q = (v / scale).to(torch.float8_e4m3fn)
            out[k] = q
            out[k[: -len("weight")] + "scale_weight"] = scale.reshape(()).float()
            out[k[: -len("weight")] + "scale_input"] = torch.ones(()).float()
            expect[k] = q.float() * scale
        else:
            out[k] = v.to(torch.float8_e4m3fn)
            expect[k] = out[k].float()
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(out, path)
    return expect


@pytest.mark.parametrize("scaled", [True, False])
def test_fp8_files_dequantize(golden, tmp_path, scaled):
    w, io = golden
    path = str(tmp_path / f"umt5_fp8_{'scaled' if scaled else 'plain'}.safetensors")
    expect = _fp8_file(w, path, scaled=scaled)
    model, _, _ = umt5.load_umt5_model(path, dtype=torch.float32)
    sd = model.state_dict()
    for k, v in expect.items():
        assert torch.equal(sd[k], v), k
    ids, mask = io["inputs.ids"], io["inputs.mask"]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert rel_err(out[real], io["outputs.hidden"][real]) < 0.15  # fp8 rounding only
    assert identify(ck.peek(path), path=path).component == "umt5-xxl"


# ---------------------------------------------------------------------------------------------- tiny set


def test_tiny_writer_files_and_determinism(tiny_dir, tmp_path):
    pth = os.path.join(tiny_dir, "models_t5_umt5-xxl-enc-bf16.pth")
    tok_dir = os.path.join(tiny_dir, "google", "umt5-xxl")
    assert os.path.isfile(pth) and os.path.isfile(os.path.join(tok_dir, "tokenizer.json"))
    sd = torch.load(pth, weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    cfg = umt5.umt5_config_from_shapes({k: v.shape for k, v in sd.items()})
    assert (cfg.dim, cfg.num_heads, cfg.dim_ffn, cfg.encoder_layers, cfg.num_buckets) == (32, 4, 64, 2, 32)
    assert umt5.shapes_for({k: v.shape for k, v in sd.items()}) == {k: list(v.shape) for k, v in sd.items()}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    assert len(tok) == cfg.vocab_size
    umt5.write_tiny_text_encoder(tmp_path, seed=0)

    def digest(p):
        with open(p, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    for rel in ("models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json", "google/umt5-xxl/spiece.model"):
        assert digest(os.path.join(tiny_dir, rel)) == digest(os.path.join(tmp_path, rel)), rel


def test_tiny_load_encode_trims(tiny_dir):
    pth = os.path.join(tiny_dir, "models_t5_umt5-xxl-enc-bf16.pth")
    te = umt5.load_text_encoder(pth, device="cpu", dtype=torch.float32)  # tokenizer found beside the file
    assert te.dim == 32 and te.text_len == 512 and te.dtype == torch.float32
    prompts = ["A man says, <S>We fight back with courage.<E> Audio: Clear male voice.", "", "jitter, bad hands"]
    outs = te.encode(prompts)
    lengths = [len(te.tokenizer.token_ids(p)) + 1 for p in prompts]
    assert [o.shape for o in outs] == [torch.Size([n, 32]) for n in lengths]
    assert lengths[1] == 1  # "" is just </s>
    assert all(torch.isfinite(o).all() for o in outs)
    # the mask makes each prompt independent of the others in the batch
    alone = te.encode([prompts[0]])[0]
    assert torch.allclose(alone, outs[0], atol=1e-5, rtol=1e-5)
    # bf16 default and .to()
    te16 = umt5.load_text_encoder(pth)
    assert te16.dtype == torch.bfloat16 and te16.encode(prompts[:1])[0].dtype == torch.bfloat16
    assert te16.to("cpu") is te16
    assert rel_err(te16.encode(prompts[:1])[0], alone) < 3e-2


def test_embedded_spiece_model_matches_tokenizer_folder(tiny_dir, tmp_path):
    pth = os.path.join(tiny_dir, "models_t5_umt5-xxl-enc-bf16.pth")
    tok_dir = os.path.join(tiny_dir, "google", "umt5-xxl")
    sd = torch.load(pth, weights_only=True)
    hf = to_hf(sd)
    with open(os.path.join(tok_dir, "spiece.model"), "rb") as f:
        hf["spiece_model"] = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    comfy = str(tmp_path / "umt5_xxl_fp16.safetensors")
    save_file({k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in hf.items()}, comfy)
    a = umt5.load_text_encoder(comfy, dtype=torch.float32)
    assert a.tokenizer.source == "embedded spiece_model"
    b = umt5.load_text_encoder(pth, tokenizer_path=tok_dir, dtype=torch.float32)
    text = ["Two women embrace. <S>We will not be erased.<E> <AUDCAP>Soft music.<ENDAUDCAP>"]
    ia, ma = a.tokenizer(text)
    ib, mb = b.tokenizer(text)
    assert torch.equal(ia, ib) and torch.equal(ma, mb)
    # bf16 -> fp16 of the same weights: equal up to fp16 rounding of bf16 values (exact for these)
    assert torch.allclose(a.encode(text)[0], b.encode(text)[0], atol=1e-5, rtol=1e-5)
    from ovi_core.cli.main import inspect_file

    assert inspect_file(comfy)["loads_strictly"] is True
    assert inspect_file(pth)["loads_strictly"] is True


def test_tokenizer_matches_hf_call_and_cleans(tiny_dir):
    from transformers import AutoTokenizer

    from ovi_core.text.prompt import read_prompt_csv

    tok_dir = os.path.join(tiny_dir, "google", "umt5-xxl")
    hf = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    ours = UMT5Tokenizer.from_pretrained(tok_dir, text_len=512)
    with open(os.path.join(tok_dir, "spiece.model"), "rb") as f:
        sp = UMT5Tokenizer.from_spiece_model(f.read(), text_len=512)
    prompts = [p for p, _ in read_prompt_csv(os.path.join(DATA, "umt5_prompts_t2v_5s.csv"))][:4] + [""]
    ids, mask = ours(prompts)
    ref = hf([clean_text(p) for p in prompts], padding="max_length", truncation=True, max_length=512,
             add_special_tokens=True, return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    ids2, mask2 = sp(prompts)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    assert clean_text("  a &amp;amp; b\n\n\t c  ") == "a & b c"


def test_truncation_warns(tiny_dir, caplog):
    tok_dir = os.path.join(tiny_dir, "google", "umt5-xxl")
    tok = UMT5Tokenizer.from_pretrained(tok_dir, text_len=16)
    with caplog.at_level(logging.WARNING, logger="ovi_core.text.tokenizer"):
        ids, mask = tok(["short", "a man " * 40])
    assert any("cut after 15 tokens" in r.getMessage() for r in caplog.records)
    assert mask[1].sum() == 16 and ids[1, -1] == tok.eos_id
    assert sum("cut after" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------------- errors


def test_wrong_files_are_refused(golden, tmp_path, tiny_dir):
    w, _ = golden
    # t5xxl-like: HF names, position bias only in the first block
    t5 = {k: v for k, v in to_hf(w).items() if not (".relative_attention_bias" in k and ".block.0." not in k)}
    t5_path = str(tmp_path / "t5xxl_fp16.safetensors")
    save_file(t5, t5_path)
    with pytest.raises(ck.CheckpointError) as e:
        umt5.load_text_encoder(t5_path)
    msg = str(e.value)
    assert "t5xxl_fp16.safetensors" in msg and "T5 encoder" in msg and "umt5_xxl" in msg
    # a VAE
    vae = {"encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3), "decoder.conv1.weight": torch.zeros(8, 48, 3, 3, 3),
           "conv1.weight": torch.zeros(96, 96, 1, 1, 1), "conv2.weight": torch.zeros(48, 48, 1, 1, 1)}
    vae_path = str(tmp_path / "Wan2.2_VAE.pth")
    torch.save(vae, vae_path)
    with pytest.raises(ck.CheckpointError, match=r"Wan2\.2_VAE\.pth.*Wan2\.2 VAE.*models_t5_umt5-xxl-enc-bf16\.pth"):
        umt5.load_text_encoder(vae_path)
    # a damaged UMT5 (one tensor missing)
    broken = {k: v for k, v in w.items() if k != "blocks.1.ffn.fc2.weight"}
    broken_path = str(tmp_path / "broken.safetensors")
    save_file(broken, broken_path)
    with pytest.raises(ck.CheckpointError, match=r"broken\.safetensors.*Missing 1 tensors: blocks\.1\.ffn\.fc2\.weight"):
        umt5.load_umt5_model(broken_path)
    with pytest.raises(FileNotFoundError):
        umt5.load_text_encoder(str(tmp_path / "nope.pth"))
    # no tokenizer anywhere
    lone = str(tmp_path / "lone" / "models_t5_umt5-xxl-enc-bf16.pth")
    os.makedirs(os.path.dirname(lone))
    torch.save(torch.load(os.path.join(tiny_dir, "models_t5_umt5-xxl-enc-bf16.pth"), weights_only=True), lone)
    with pytest.raises(FileNotFoundError, match="google/umt5-xxl"):
        umt5.load_text_encoder(lone)
    # tokenizer bigger than the embedding table (golden vocab 300 < tiny tokenizer 1000)
    with pytest.raises(ValueError, match="do not belong together"):
        umt5.load_text_encoder(GOLD_W, tokenizer_path=os.path.join(tiny_dir, "google", "umt5-xxl"))
