"""The native-model pieces that need no ComfyUI (issue #21): the rooted module layout, the frame-packed latent and
the mask -> clean-token rule. Tiny random models built by the real code; the oracle is the official-layout
OviFusionModel itself."""

from __future__ import annotations

import pytest
import torch

from ovi_core.model import rooted
from ovi_core.model.loader import random_fusion
from ovi_core.sampling import packed


@pytest.fixture(scope="module")
def fusion():
    return random_fusion(seed=1).float().eval()


def test_rooted_layout_keys_and_strict_load(fusion):
    sd = fusion.state_dict()
    r = rooted.OviRootedFusionModel(fusion.config)
    rsd = rooted.rooted_state_dict(sd)
    assert set(r.state_dict()) == set(rsd)
    assert "blocks.0.self_attn.q.weight" in rsd and "audio_model.blocks.0.self_attn.q.weight" in rsd
    assert not any(k.startswith("video_model.") for k in r.state_dict())
    r.load_state_dict(rsd, strict=True)
    assert rooted.looks_rooted(rsd) and not rooted.looks_rooted(sd)
    shapes = {k: tuple(v.shape) for k, v in rsd.items()}
    assert rooted.rooted_config(shapes, text_len=fusion.config.video.text_len) == fusion.config
    assert {rooted.to_official(k) for k in rsd} == set(sd)
    with pytest.raises(ValueError, match="official Ovi fusion"):
        rooted.rooted_state_dict({"blocks.0.x": torch.zeros(1)})


def test_rooted_forward_equals_official(fusion):
    r = rooted.OviRootedFusionModel(fusion.config)
    r.load_state_dict(rooted.rooted_state_dict(fusion.state_dict()), strict=True)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 48, 2, 4, 4, generator=g)
    audio = torch.randn(2, 20, 9, generator=g)  # channel-first, as in the native latent
    t = torch.tensor([900.0, 500.0])
    ctx = torch.randn(2, 5, fusion.config.video.text_dim, generator=g)
    actx = torch.randn(2, 3, fusion.config.audio.text_dim, generator=g)
    mask = torch.ones_like(video)
    mask[:, :, 0] = 0  # frame 0 kept: clean tokens
    with torch.no_grad():
        v, a = rooted.forward_streams(r, video, audio, t, ctx, actx, slg_layer=1,
                                      slg_mask=torch.tensor([False, True]), video_mask=mask)
        wv, wa = fusion(video, audio.transpose(1, 2), t, ctx, actx, slg_layer=1, slg_mask=torch.tensor([False, True]),
                        first_frame_clean=True)
    assert torch.equal(v, wv) and torch.equal(a, wa.transpose(1, 2))


def test_share_uses_the_same_weights(fusion):
    r = rooted.OviRootedFusionModel(fusion.config, device="meta")
    r.share(fusion)
    assert r.blocks[0] is fusion.video_model.blocks[0] and r.video_model is fusion.video_model
    assert r.audio_model is fusion.audio_model
    assert all(not p.is_meta for p in r.parameters())


@pytest.mark.parametrize("f,h,w", [(31, 44, 80), (31, 4, 4), (61, 60, 60), (2, 2, 2), (5, 8, 6)])
def test_frame_pack_roundtrip(f, h, w):
    v = torch.randn(2, 48, f, h, w)
    a = torch.randn(2, 20, packed.audio_length(f))
    x = packed.pack(v, a)
    assert x.shape == (2, 48, f + packed.audio_frames(f, h, w), h, w)
    v2, a2 = packed.unpack(x)
    assert torch.equal(v, v2) and torch.equal(a, a2)
    assert packed.video_frames(x) == f


def test_frame_pack_lengths_and_errors():
    assert packed.audio_length(31) == 157 and packed.audio_length(61) == 314  # the official clip lengths
    with pytest.raises(ValueError, match="does not match"):
        packed.pack(torch.zeros(1, 48, 31, 4, 4), torch.zeros(1, 20, 150))
    with pytest.raises(ValueError, match="not a packed Ovi"):
        packed.unpack(torch.zeros(1, 48, 1, 4, 4))


def test_clean_tokens():
    m = torch.ones(1, 48, 3, 4, 4)
    assert rooted.clean_tokens_video(m, (1, 2, 2)) is None
    m[:, :, 1, :2, :2] = 0  # one whole token of frame 1 kept
    m[:, :, 2, 0, 0] = 0  # part of a token: not clean
    c = rooted.clean_tokens_video(m, (1, 2, 2))
    assert c.shape == (1, 3, 2, 2) and c.sum() == 1 and c[0, 1, 0, 0]
    am = torch.ones(1, 20, 6)
    am[:, :, 2:4] = 0
    assert rooted.clean_tokens_audio(am).tolist() == [[False, False, True, True, False, False]]


def test_native_convert_cli(tmp_path):
    from safetensors import safe_open

    from ovi_core.cli.main import main
    from ovi_core.cli.native import convert
    from ovi_core.model.loader import write_tiny_fusion

    src = write_tiny_fusion(tmp_path / "model.safetensors", seed=2)
    dst = tmp_path / "ovi_native.safetensors"
    assert main(["native-convert", str(src), str(dst)]) == 0
    with safe_open(str(src), framework="pt") as a, safe_open(str(dst), framework="pt") as b:
        assert sorted(b.keys()) == sorted(rooted.to_rooted(k) for k in a.keys())
        k = "video_model.blocks.0.self_attn.q.weight"
        assert torch.equal(a.get_tensor(k), b.get_tensor(rooted.to_rooted(k)))
        assert rooted.looks_rooted(b.keys())
    assert main(["native-convert", str(src), str(dst)]) != 0  # refuses to overwrite
    with pytest.raises(FileExistsError):
        convert(src, dst)
    with pytest.raises(ValueError, match="not an official Ovi fusion"):
        convert(dst, tmp_path / "again.safetensors")
    assert not (tmp_path / "again.safetensors").exists()


def test_native_convert_keeps_scaled_fp8(tmp_path):
    """``quantize --format fp8_scaled`` output (float8 weights, ``scale_weight`` tensors, the root ``scaled_fp8``
    marker ComfyUI detects scaled fp8 by) converts with every tensor unchanged and the marker kept at the root."""
    from safetensors import safe_open

    from ovi_core.cli.native import convert
    from ovi_core.model.loader import write_tiny_fusion
    from ovi_core.quant.convert import quantize_file

    src = write_tiny_fusion(tmp_path / "model.safetensors", seed=2)
    q = tmp_path / "fp8.safetensors"
    quantize_file(src, q, format="fp8_scaled")
    dst = convert(q, tmp_path / "fp8_native.safetensors")
    with safe_open(str(q), framework="pt") as a, safe_open(dst, framework="pt") as b:
        assert "scaled_fp8" in a.keys() and "scaled_fp8" in b.keys()
        for k in a.keys():
            new = k if k == "scaled_fp8" else rooted.to_rooted(k)
            x, y = a.get_tensor(k), b.get_tensor(new)
            assert x.dtype == y.dtype and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))
        assert b.get_tensor("blocks.0.self_attn.q.weight").dtype == torch.float8_e4m3fn
        assert "blocks.0.self_attn.q.scale_weight" in b.keys()


@pytest.mark.parametrize("scaled", [False, True])
def test_native_convert_combines_kijais_split_pair(tmp_path, scaled):
    """``native-convert VIDEO OUT --audio AUDIO``: kijai's two tower files in one rooted file, every tensor unchanged
    (scales as ``<module>.scale_weight``, the marker kept); the same file either way round is refused."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ovi_core.cli.main import main
    from ovi_core.cli.native import convert
    from ovi_core.model.loader import load_fusion, write_tiny_fusion
    from ovi_core.quant.kijai import write_kijai_files

    src = write_tiny_fusion(tmp_path / "model.safetensors", seed=2)
    video, audio = write_kijai_files(load_file(str(src)), tmp_path / "kj", fp8_scaled=scaled)
    dst = tmp_path / "native.safetensors"
    assert main(["native-convert", video, str(dst), "--audio", audio]) == 0
    with safe_open(str(dst), framework="pt") as f:
        keys = set(f.keys())
        assert rooted.looks_rooted(keys) and rooted.has_audio_tower(keys)
        assert ("scaled_fp8" in keys) == scaled
        assert ("blocks.0.self_attn.q.scale_weight" in keys) == scaled
        assert "blocks.0.modulation.modulation" in keys and "audio_model.blocks.0.modulation.modulation" in keys
    a, b = load_fusion([video, audio], dtype=torch.float32), load_fusion(str(dst), dtype=torch.float32)
    for (k, x), (k2, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(x, y), k
    with pytest.raises(ValueError, match="audio"):
        convert(audio, tmp_path / "swapped.safetensors", audio=video)


def test_fit_first_frame():
    from ovi_core.conditioning.first_frame import fit_first_frame

    img = torch.zeros(1, 40, 100, 3)
    img[:, :, 40:60] = 1.0  # a white band in the middle
    x = fit_first_frame(img, 32, 32)
    assert x.shape == (1, 3, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert x[0, 0, 0, :, 16].min() > 0.9 and x[0, 0, 0, :, 0].max() < -0.9  # centre crop keeps the band
    with pytest.raises(ValueError, match="IMAGE"):
        fit_first_frame(torch.zeros(1, 3, 8, 8), 8, 8)
