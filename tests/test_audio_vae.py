"""MMAudio 16 kHz VAE: official names, golden outputs, weight folding, chunked decode, loader errors."""

import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.audio import mmaudio_vae as mv
from ovi_core.io.checkpoints import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_full_size_keys_equal_manifest(data_dir):
    manifest = json.load(open(os.path.join(data_dir, "manifests", "mmaudio_vae_16k.json")))["keys"]
    assert mv.full_size_shapes() == manifest
    assert mv.shapes_for(manifest) == manifest
    assert mv.config_from_shapes(manifest) == mv.MMAudioVAEConfig.full_size()


def test_shapes_for_tiny_and_rejects_other(data_dir):
    w = load_file(os.path.join(data_dir, "mmaudio_vae.weights.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in w.items()}
    assert mv.shapes_for(shapes) == {k: list(v) for k, v in shapes.items()}
    assert mv.config_from_shapes(shapes) == mv.MMAudioVAEConfig.tiny()
    with pytest.raises(ValueError):
        mv.shapes_for({"conv_pre.weight_v": (1536, 80, 7)})


@pytest.fixture(scope="module")
def golden_vae(data_dir="tests/data"):
    return mv.load_mmaudio_vae(os.path.join(os.path.dirname(__file__), "data", "mmaudio_vae.weights.safetensors"))


def test_golden_encode_decode(golden_vae, data_dir):
    io = load_file(os.path.join(data_dir, "mmaudio_vae.io.safetensors"))
    with torch.inference_mode():
        mean = golden_vae.encode(io["inputs.mel"])
        mel = golden_vae.decode(io["inputs.z"])
    assert mean.shape == (1, 20, 16) and mel.shape == (1, 80, 32)
    assert _rel(mean, io["outputs.mean"]) < 1e-5
    assert _rel(mel, io["outputs.mel"]) < 1e-5


def test_weights_are_folded_at_load(golden_vae, data_dir):
    raw = load_file(os.path.join(data_dir, "mmaudio_vae.weights.safetensors"))
    w = raw["decoder.up.1.block.0.conv1.weight"]  # [64, 128, 3]
    folded = golden_vae.decoder.up[1].block[0].conv1.weight
    fan_in = w.shape[1] * w.shape[2]
    # independent formula: w / (1e-4 + ||w|| / sqrt(fan_in)) / sqrt(fan_in), per output channel
    expect = w / (1e-4 + w.flatten(1).norm(dim=1)[:, None, None] / math.sqrt(fan_in)) / math.sqrt(fan_in)
    assert torch.allclose(folded, expect, atol=1e-7)
    assert not torch.allclose(folded, w)
    assert golden_vae.decoder.learnable_gain.item() == raw["decoder.learnable_gain"].item()


def test_chunked_decode_equals_unchunked(golden_vae):
    z = torch.randn(2, 20, 45, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = golden_vae.decode(z)
        for chunk in (1, 8, 13):
            assert (golden_vae.decode(z, chunk_size=chunk) - full).abs().max().item() < 1e-5
    assert full.shape == (2, 80, 90)


def test_chunk_context_is_needed(golden_vae):
    """The exactness above comes from the context: cutting the tail without it changes the output."""
    z = torch.randn(1, 20, 40, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        h = golden_vae.decoder.head(z)
        full = golden_vae.decoder.tail(h)
        cut = torch.cat([golden_vae.decoder.tail(h[..., :20]), golden_vae.decoder.tail(h[..., 20:])], dim=-1)
    assert (cut - full).abs().max().item() > 1e-3


def test_tiny_writer_official_format(tmp_path):
    p = tmp_path / "v1-16.pth"
    cfg = mv.write_tiny_mmaudio_vae(p, seed=3)
    sd = torch.load(p, weights_only=True)
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in sd.values())
    assert {k: list(v.shape) for k, v in sd.items()} == mv.shapes_for({k: v.shape for k, v in sd.items()})
    assert cfg.hidden_dim == 32 and sd["encoder.conv_in.weight"].shape == (32, 80, 3)
    assert torch.equal(sd["data_mean"].flatten(), torch.tensor(mv.DATA_MEAN_80D))
    mv.write_tiny_mmaudio_vae(tmp_path / "again.pth", seed=3)
    again = torch.load(tmp_path / "again.pth", weights_only=True)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    vae = mv.load_mmaudio_vae(p, dtype=torch.bfloat16)
    with torch.inference_mode():
        mel = vae.decode(torch.randn(1, 20, 6))
    assert mel.shape == (1, 80, 12) and mel.dtype == torch.bfloat16 and torch.isfinite(mel).all()


def test_wrong_file_error(tmp_path, data_dir):
    with pytest.raises(CheckpointError) as e:
        mv.load_mmaudio_vae(os.path.join(data_dir, "bigvgan.weights.safetensors"))
    msg = str(e.value)
    assert "bigvgan.weights.safetensors" in msg and "BigVGAN" in msg and "Missing" in msg and "data_mean" in msg
    with pytest.raises(FileNotFoundError):
        mv.load_mmaudio_vae(tmp_path / "nope.pth")


def test_44k_vae_rejected(tmp_path):
    cfg = mv.MMAudioVAEConfig(data_dim=128, embed_dim=40, hidden_dim=8)
    sd = {k: torch.zeros(v) for k, v in mv._meta_shapes(cfg).items()}
    torch.save(sd, tmp_path / "v1-44.pth")
    with pytest.raises(CheckpointError, match="44.1 kHz"):
        mv.load_mmaudio_vae(tmp_path / "v1-44.pth")
