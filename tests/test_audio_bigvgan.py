"""BigVGAN v1 vocoder: official names, golden output, both weight-norm namings, folding, chunking, errors."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.audio import bigvgan as bv
from ovi_core.io.checkpoints import CheckpointError

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN_W = os.path.join(DATA, "bigvgan.weights.safetensors")


pytestmark = pytest.mark.usefixtures("one_thread")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _to_param_names(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            k = k[: -len(".weight_g")] + ".parametrizations.weight.original0"
        elif k.endswith(".weight_v"):
            k = k[: -len(".weight_v")] + ".parametrizations.weight.original1"
        out[k] = v
    return out


def test_full_size_keys_equal_manifest():
    manifest = json.load(open(os.path.join(DATA, "manifests", "bigvgan_16k.json")))["keys"]
    assert bv.full_size_shapes() == manifest
    assert bv.shapes_for(manifest) == manifest
    prefixed = {"generator." + k: v for k, v in manifest.items()}
    assert bv.shapes_for(prefixed) == prefixed
    param = _to_param_names(prefixed)
    assert bv.shapes_for(param) == param
    assert bv.config_from_shapes(param) == bv.BigVGANConfig.full_size()


def test_config_from_golden_json():
    cfg = bv.BigVGANConfig.from_dict(json.load(open(os.path.join(DATA, "bigvgan.json")))["config"])
    assert cfg == bv.BigVGANConfig(upsample_initial_channel=128)
    assert cfg.hop_length == 256
    assert bv.config_from_shapes(load_file(GOLDEN_W)) == cfg
    with pytest.raises(ValueError):
        bv.BigVGANConfig.from_dict({"upsample_rates": [4], "bogus": 1})


def test_golden_waveform():
    io = load_file(os.path.join(DATA, "bigvgan.io.safetensors"))
    model = bv.load_bigvgan(GOLDEN_W)
    with torch.inference_mode():
        wav = model(io["inputs.mel"])
    assert wav.shape == (1, 1, 3072)
    # float32 rounding alone moves this 100-layer random net by ~1e-5 relative (our fp32 vs fp64 differ by 9e-6)
    assert _rel(wav, io["outputs.waveform"]) < 3e-5


def test_kaiser_filter_equals_stored_buffers():
    w = load_file(GOLDEN_W)
    ref = bv.kaiser_sinc_filter1d(0.25, 0.3, 12)
    assert torch.allclose(w["generator.activation_post.upsample.filter"], ref, atol=1e-7)
    assert torch.allclose(w["generator.resblocks.3.activations.2.downsample.lowpass.filter"], ref, atol=1e-7)


def test_fold_matches_torch_weight_norm():
    conv = torch.nn.ConvTranspose1d(6, 4, 8, 4, padding=2)
    conv = torch.nn.utils.parametrizations.weight_norm(conv)
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(torch.rand(6, 1, 1) + 0.5)
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    assert torch.allclose(bv.fold_weight_norm(g, v), conv.weight, atol=1e-7)


def test_both_weight_norm_namings_load_alike(tmp_path):
    io = load_file(os.path.join(DATA, "bigvgan.io.safetensors"))
    sd = {k: v for k, v in load_file(GOLDEN_W).items()}
    torch.save({"generator": {k[len("generator.") :]: v for k, v in sd.items()}}, tmp_path / "classic.pt")
    torch.save({"generator": {k[len("generator.") :]: v for k, v in _to_param_names(sd).items()}},
               tmp_path / "param.pt")
    save_file({k[len("generator.") :]: v for k, v in _to_param_names(sd).items()}, str(tmp_path / "bare.safetensors"))
    mel = io["inputs.mel"][..., :6]
    with torch.inference_mode():
        outs = [bv.load_bigvgan(tmp_path / n)(mel) for n in ("classic.pt", "param.pt", "bare.safetensors")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert "conv_pre.weight" in bv.load_bigvgan(tmp_path / "param.pt").state_dict()


def test_chunked_equals_unchunked_and_needs_context(tmp_path):
    bv.write_tiny_bigvgan(tmp_path / "g.pt", seed=1)
    model = bv.load_bigvgan(tmp_path / "g.pt")
    mel = torch.randn(2, 80, 40, generator=torch.Generator().manual_seed(0)) - 1.8
    with torch.inference_mode():
        full = model(mel)
        for chunk in (7, 16):
            assert (model(mel, chunk_size=chunk) - full).abs().max().item() < 1e-5
        cut = torch.cat([model(mel[..., :20]), model(mel[..., 20:])], dim=-1)  # no context
    assert full.shape == (2, 1, 40 * 256) and 0.02 < full.std().item() < 0.9
    assert (cut - full).abs().max().item() > 1e-3


def test_tiny_writer_official_format(tmp_path):
    p = tmp_path / "best_netG.pt"
    cfg = bv.write_tiny_bigvgan(p, seed=0)
    obj = torch.load(p, weights_only=True)
    assert list(obj) == ["generator"]
    sd = obj["generator"]
    assert "conv_pre.weight_g" in sd and "conv_pre.weight_v" in sd and not any("parametrizations" in k for k in sd)
    assert {k: list(v.shape) for k, v in sd.items()} == bv.shapes_for({k: v.shape for k, v in sd.items()})
    assert cfg.upsample_initial_channel == 64 and sd["conv_pre.weight_v"].shape == (64, 80, 7)
    bv.write_tiny_bigvgan(tmp_path / "again.pt", seed=0)
    again = torch.load(tmp_path / "again.pt", weights_only=True)["generator"]
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    model = bv.load_bigvgan(p, dtype=torch.bfloat16)
    with torch.inference_mode():
        wav = model(torch.randn(1, 80, 3))
    assert wav.shape == (1, 1, 768) and wav.dtype == torch.bfloat16 and torch.isfinite(wav).all()


def test_wrong_file_error():
    with pytest.raises(CheckpointError) as e:
        bv.load_bigvgan(os.path.join(DATA, "mmaudio_vae.weights.safetensors"))
    msg = str(e.value)
    assert "mmaudio_vae.weights.safetensors" in msg and "MMAudio" in msg
    assert "Missing" in msg and "Unexpected" in msg and "conv_post" in msg
