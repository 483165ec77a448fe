"""Wan2.2 video VAE: manifest, golden outputs of the official code, causality, tiling, loading, tiny writer."""

import io
import json
import os
from contextlib import redirect_stdout

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import identify
from ovi_core.vae import wan_tiling as wt
from ovi_core.vae import wan_vae as wv
from ovi_core.vae.wan_config import WanVAEConfig
from ovi_core.vae.wan_vae import WanVAE, full_size_shapes, load_wan_vae, shapes_for, write_tiny_wan_vae

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
WEIGHTS = os.path.join(DATA, "wan_vae.weights.safetensors")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def golden_vae() -> WanVAE:
    return load_wan_vae(WEIGHTS)


@pytest.fixture(scope="module")
def golden_io() -> dict[str, torch.Tensor]:
    return load_file(os.path.join(DATA, "wan_vae.io.safetensors"))


# ---------------------------------------------------------------------------------------------- shapes


def test_full_size_shapes_equal_manifest():
    manifest = json.load(open(os.path.join(DATA, "manifests", "wan2_2_vae.json")))["keys"]
    assert full_size_shapes() == manifest


def test_cli_keys_wan_vae_equals_manifest():
    from ovi_core.cli import main as cli

    manifest = json.load(open(os.path.join(DATA, "manifests", "wan2_2_vae.json")))["keys"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["keys", "wan-vae"]) == 0
    assert json.loads(buf.getvalue()) == manifest


def test_shapes_for_infers_full_and_tiny_configs():
    manifest = json.load(open(os.path.join(DATA, "manifests", "wan2_2_vae.json")))["keys"]
    assert shapes_for(manifest) == manifest
    assert wv.config_from_shapes(manifest) == WanVAEConfig.full()
    tiny = {k: list(v.shape) for k, v in load_file(WEIGHTS).items()}
    assert shapes_for(tiny) == tiny
    assert wv.config_from_shapes(tiny) == WanVAEConfig.tiny()
    cfg = json.load(open(os.path.join(DATA, "wan_vae.json")))["config"]
    assert WanVAEConfig.from_dict(cfg) == WanVAEConfig.tiny()


# ---------------------------------------------------------------------------------------------- golden


@pytest.fixture(scope="module")
def golden_latent(golden_vae, golden_io) -> torch.Tensor:
    return golden_vae.encode(golden_io["inputs.video"])


def test_golden_encode(golden_latent, golden_io):
    latent = golden_latent
    ref = golden_io["outputs.latent"]
    assert latent.shape == ref.shape == (1, 48, 3, 4, 4)
    assert rel(latent, ref) < 1e-5


def test_golden_decode(golden_vae, golden_io):
    video = golden_vae.decode(golden_io["outputs.latent"])
    ref = golden_io["outputs.video"]
    assert video.shape == ref.shape == (1, 3, 9, 64, 64)
    assert rel(video, ref) < 1e-5
    assert video.abs().max() <= 1.0


def test_bf16_weights_compute_in_fp32(golden_vae, golden_io):
    """bf16-stored weights are upcast per layer: same as an fp32 model holding bf16-rounded weights."""
    vae16 = load_wan_vae(WEIGHTS, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in vae16.parameters())
    rounded = WanVAE(WanVAEConfig.tiny())
    rounded.load_state_dict({k: v.bfloat16().float() for k, v in golden_vae.state_dict().items()})
    z = golden_io["outputs.latent"][:, :, :2, :2, :2]
    out16 = vae16.decode(z)
    assert out16.dtype == torch.float32
    assert rel(out16, rounded.decode(z)) < 1e-5
    # and bf16 rounding of the weights alone moves the output only a little
    assert rel(out16, golden_vae.decode(z)) < 5e-2


# ---------------------------------------------------------------------------------------------- causality


def test_decode_is_causal(golden_vae):
    torch.manual_seed(0)
    z = torch.randn(1, 48, 3, 2, 2)
    full = golden_vae.decode(z)
    assert full.shape == (1, 3, 9, 32, 32)
    for k in (1, 2):
        part = golden_vae.decode(z[:, :, :k])
        n = 1 + 4 * (k - 1)
        assert part.shape[2] == n
        torch.testing.assert_close(part, full[:, :, :n], rtol=0, atol=1e-6)


def test_encode_is_causal(golden_vae, golden_io, golden_latent):
    video = golden_io["inputs.video"]
    full = golden_latent
    part = golden_vae.encode(video[:, :, :5])
    torch.testing.assert_close(part, full[:, :, :2], rtol=0, atol=1e-6)


def test_progress_reports_every_frame(golden_vae):
    calls = []
    golden_vae.decode(torch.zeros(1, 48, 3, 1, 1), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


# ---------------------------------------------------------------------------------------------- tiling


def test_tile_layout_and_ramps():
    assert wt._tile_starts(10, 16, 4) == [0]
    starts = wt._tile_starts(20, 8, 2)
    assert starts[0] == 0 and starts[-1] == 12
    assert all(b - a <= 6 for a, b in zip(starts, starts[1:], strict=False))
    # the ramps of all tiles sum to one everywhere
    acc = torch.zeros(20 * 16, dtype=torch.float64)
    for k, s in enumerate(starts):
        acc[s * 16 : (s + 8) * 16] += wt._ramp_weights(starts, 8, 20, 16, k)
    torch.testing.assert_close(acc, torch.ones_like(acc))
    th, tw = wt._auto_tile(60, 60, area=48 * 48, overlap=8)
    assert th * tw <= 48 * 48


def test_tiled_decode_matches_untiled(golden_vae):
    """Two tiles along the width: equal to the untiled decode away from the overlap, close inside it."""
    torch.manual_seed(1)
    z = torch.randn(1, 48, 2, 1, 20)
    untiled = golden_vae.decode(z)
    calls = []
    tiled = golden_vae.decode(z, tile_latent=12, tile_overlap=4, progress=lambda d, t: calls.append(t))
    assert wt._tile_starts(20, 12, 4) == [0, 8]
    assert calls[-1] == 2 * 2  # 1 x 2 tiles (height 1 fits in one), 2 latent frames each
    assert tiled.shape == untiled.shape == (1, 3, 5, 16, 320)
    assert not torch.equal(tiled, untiled)
    assert rel(tiled, untiled) < 0.02
    # seams only matter near tile borders: 6+ latent pixels away from both borders the tiles are exact
    err = (tiled - untiled).abs().amax(dim=(0, 1, 2, 3)).view(20, 16).amax(dim=1)  # per latent column
    assert err[:6].max() < 1e-5 and err[14:].max() < 1e-5
    assert err[8:12].max() > 1e-4  # inside the overlap the two tiles really differ


def test_tiles_covering_a_pixel_three_times_are_renormalised(golden_vae):
    torch.manual_seed(3)
    z = torch.randn(1, 48, 1, 1, 12)
    assert wt._tile_starts(12, 6, 4) == [0, 2, 4, 6]
    assert rel(golden_vae.decode(z, tile_latent=6, tile_overlap=4), golden_vae.decode(z)) < 0.05


def test_tiles_only_when_memory_requires(golden_vae):
    """Untiled whenever the estimate fits; with less memory than that, tiles that fit (reported by the plan)."""
    from ovi_core.vae.decode_plan import SAFETY

    torch.manual_seed(2)
    z = torch.randn(1, 48, 1, 12, 12)
    full = golden_vae.plan_decode(z.shape, memory_budget=10**15)
    assert not full.tiled and full.message() == ""
    just = golden_vae.plan_decode(z.shape, memory_budget=int(full.estimated_bytes / SAFETY) + 1)
    assert not just.tiled  # exactly enough: still untiled
    short = golden_vae.plan_decode(z.shape, memory_budget=int((full.estimated_bytes - 1) / SAFETY))
    assert short.tiled and short.fits and short.estimated_bytes < full.estimated_bytes
    assert "tiles" in short.message() and "free" in short.message()
    untiled = golden_vae.decode(z, memory_budget=10**15)
    calls = []
    tiled = golden_vae.decode(z, memory_budget=int((full.estimated_bytes - 1) / SAFETY),
                              progress=lambda d, t: calls.append(t))
    assert calls[-1] == short.tiles > 1
    assert not torch.equal(tiled, untiled)
    assert rel(tiled, untiled) < 0.1
    assert torch.equal(tiled, golden_vae.decode(z, plan=short))


def test_bad_tile_arguments(golden_vae):
    z = torch.zeros(1, 48, 1, 4, 4)
    with pytest.raises(ValueError, match="tile_overlap"):
        golden_vae.decode(z, tile_latent=4, tile_overlap=4)
    with pytest.raises(ValueError, match="tile_latent"):
        golden_vae.decode(z, tile_latent=0)


def test_input_validation(golden_vae):
    with pytest.raises(ValueError, match="multiples of 16"):
        golden_vae.encode(torch.zeros(1, 3, 1, 40, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        golden_vae.encode(torch.zeros(1, 4, 1, 32, 32))
    with pytest.raises(ValueError, match="48"):
        golden_vae.decode(torch.zeros(1, 16, 1, 4, 4))


def test_memory_estimate_documented_numbers():
    gb = [wt.estimate_decode_memory(t, t) / 1e9 for t in (32, 44, 60)]
    assert 3.5 < gb[0] < 5 and 7 < gb[1] < 9.5 and 13 < gb[2] < 17
    assert wt.estimate_decode_memory(44, 44, config=WanVAEConfig.tiny()) < gb[1] * 1e9 / 20


# ---------------------------------------------------------------------------------------------- loading


def _wan21_like() -> dict[str, torch.Tensor]:
    return {
        "encoder.conv1.weight": torch.zeros(96, 3, 3, 3, 3),
        "encoder.conv1.bias": torch.zeros(96),
        "decoder.conv1.weight": torch.zeros(384, 16, 3, 3, 3),
        "decoder.head.2.weight": torch.zeros(3, 96, 3, 3, 3),
        "conv1.weight": torch.zeros(32, 32, 1, 1, 1),
        "conv1.bias": torch.zeros(32),
        "conv2.weight": torch.zeros(16, 16, 1, 1, 1),
        "conv2.bias": torch.zeros(16),
    }


def test_wan21_vae_is_rejected(tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(_wan21_like(), path)
    with pytest.raises(ck.CheckpointError, match="Wan2.1 VAE") as e:
        load_wan_vae(path)
    assert "Wan2.1_VAE.pth" in str(e.value) and "Wan2.2_VAE.pth" in str(e.value)
    with pytest.raises(ValueError, match="Wan2.1 VAE"):
        shapes_for({k: list(v.shape) for k, v in _wan21_like().items()})


def test_not_a_vae_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"token_embedding.weight": torch.zeros(4, 2), "blocks.0.attn.q.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ck.CheckpointError, match="not a Wan VAE"):
        load_wan_vae(path)


def test_truncated_state_dict_names_missing_keys(tmp_path):
    sd = load_file(WEIGHTS)
    sd.pop("decoder.middle.1.proj.weight")
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(ck.CheckpointError, match="decoder.middle.1.proj.weight"):
        load_wan_vae(path)


def test_tiny_writer_round_trip(tmp_path):
    p1 = write_tiny_wan_vae(tmp_path / "a" / "Wan2.2_VAE.pth", seed=3)
    p2 = write_tiny_wan_vae(tmp_path / "b" / "Wan2.2_VAE.pth", seed=3)
    raw = torch.load(p1, map_location="cpu", weights_only=True)
    assert isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values())
    assert {k: list(v.shape) for k, v in raw.items()} == {k: list(v.shape) for k, v in load_file(WEIGHTS).items()}
    raw2 = torch.load(p2, map_location="cpu", weights_only=True)
    assert all(torch.equal(raw[k], raw2[k]) for k in raw)
    other = torch.load(write_tiny_wan_vae(tmp_path / "c.pth", seed=4), map_location="cpu", weights_only=True)
    assert not torch.equal(raw["decoder.conv1.weight"], other["decoder.conv1.weight"])

    ident = identify(ck.peek(p1), path=p1)
    assert ident.component == "wan2.2-vae"
    vae = load_wan_vae(p1)
    assert vae.config == WanVAEConfig.tiny()
    assert all(torch.equal(v, raw[k]) for k, v in vae.state_dict().items())
    torch.manual_seed(0)
    video = torch.rand(1, 3, 5, 16, 32) * 2 - 1
    latent = vae.encode(video)
    assert latent.shape == (1, 48, 2, 1, 2) and torch.isfinite(latent).all()
    out = vae.decode(latent)
    assert out.shape == (1, 3, 5, 16, 32) and out.abs().max() <= 1.0 and out.std() > 0


def test_batch_items_are_independent(golden_vae):
    torch.manual_seed(4)
    z = torch.randn(2, 48, 2, 1, 2)
    both = golden_vae.decode(z)
    torch.testing.assert_close(both, torch.cat([golden_vae.decode(z[:1]), golden_vae.decode(z[1:])]), rtol=0, atol=1e-6)
    video = both[:, :, :5]
    lat = golden_vae.encode(video)
    torch.testing.assert_close(lat[1:], golden_vae.encode(video[1:]), rtol=0, atol=1e-5)


def test_tiled_bf16_decode_blends_in_float32(golden_vae):
    """With a bf16 compute dtype (GPU), the tile blends accumulate in float32 and the result is rounded to bf16
    once; float32 decodes (the CPU default) keep their dtype."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Blends(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.add_.Tensor and args[0].ndim == 5 and args[0].shape[1] == 3:
                self.dtypes.append(args[0].dtype)  # a tile added into the output video
            return func(*args, **(kwargs or {}))

    vae16 = load_wan_vae(WEIGHTS, compute_dtype=torch.bfloat16)
    torch.manual_seed(1)
    z = torch.randn(1, 48, 2, 1, 20)
    with Blends() as mode:
        out = vae16.decode(z, tile_latent=12, tile_overlap=4)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 5, 16, 320)
    assert mode.dtypes and set(mode.dtypes) == {torch.float32}
    assert rel(out, golden_vae.decode(z, tile_latent=12, tile_overlap=4)) < 0.05
    with Blends() as mode:
        assert golden_vae.decode(z, tile_latent=12, tile_overlap=4).dtype == torch.float32
    assert set(mode.dtypes) == {torch.float32}
