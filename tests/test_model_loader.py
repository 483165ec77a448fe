"""Fusion DiT files: manifest keys, config inference, save/load, split towers, fp8, wrong files."""

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.cli import main as cli
from ovi_core.io import checkpoints as ck
from ovi_core.model.config import OVI_11B, TINY, FusionConfig, TowerConfig, infer_config
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.loader import full_size_shapes, load_fusion, save_fusion, shapes_for, write_tiny_fusion

DATA = os.path.join(os.path.dirname(__file__), "data")


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.float() - y.float()).norm() / y.float().norm())


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(1, 48, 2, 4, 4, generator=g),
        torch.randn(1, 11, 20, generator=g),
        torch.tensor([700.0]),
        torch.randn(1, 4, 32, generator=g),
        torch.randn(1, 6, 32, generator=g),
    )


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> str:
    return write_tiny_fusion(tmp_path_factory.mktemp("tiny") / "model.safetensors", seed=0)


def test_cli_keys_equal_manifest(capsys):
    assert cli.main(["keys", "fusion"]) == 0
    out = json.loads(capsys.readouterr().out)
    manifest = json.load(open(os.path.join(DATA, "manifests", "ovi_fusion.json")))
    assert out == manifest["keys"]
    assert len(out) == manifest["count"] == 2073


def test_infer_config():
    assert infer_config(full_size_shapes()) == OVI_11B
    tiny_shapes = ck.meta_shapes(OviFusionModel(TINY, device="meta"))
    assert infer_config(tiny_shapes, text_len=TINY.video.text_len) == TINY
    assert infer_config(tiny_shapes).video.text_len == 512  # invisible in shapes: the official value
    assert infer_config(tiny_shapes, num_heads=2).video.num_heads == 2
    assert infer_config(tiny_shapes, text_len=16).audio.text_len == 16
    deeper = dataclasses.replace(TINY.video, num_layers=3, ffn_dim=96, qk_norm=False)
    cfg = FusionConfig(video=deeper, audio=dataclasses.replace(TINY.audio, num_layers=3, ffn_dim=96, qk_norm=False))
    assert infer_config(ck.meta_shapes(OviFusionModel(cfg, device="meta")), text_len=8) == cfg
    with pytest.raises(ValueError, match="audio_model"):
        infer_config({k: v for k, v in tiny_shapes.items() if k.startswith("video_model.")})


def test_config_from_official_json():
    meta = json.load(open(os.path.join(DATA, "fusion_t2v.json")))
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    assert cfg.video.num_layers == 3 and cfg.audio.temporal_rope_scaling_factor == 0.19676
    assert cfg.to_official()[0]["patch_size"] == [1, 2, 2]
    with pytest.raises(ValueError, match="differ in dim"):
        FusionConfig(video=TINY.video, audio=dataclasses.replace(TINY.audio, dim=128, num_heads=8))
    with pytest.raises(ValueError, match="model_type"):
        TowerConfig(model_type="t2v2")


def test_shapes_for_and_inspect(tiny_file, capsys):
    shapes = {k: v.shape for k, v in ck.peek(tiny_file).items()}
    assert shapes_for(shapes) == {k: list(v) for k, v in sorted(shapes.items())}
    assert cli.main(["inspect", tiny_file]) == 0
    assert json.loads(capsys.readouterr().out)["loads_strictly"] is True
    video_only = {k[len("video_model."):]: v for k, v in shapes.items() if k.startswith("video_model.")}
    assert shapes_for(video_only) == {k: list(v) for k, v in sorted(video_only.items())}


def test_round_trip_bit_exact(tiny_file, tmp_path):
    m1 = load_fusion(tiny_file, dtype=torch.bfloat16)
    # text_len is invisible in shapes: a loaded tiny model gets the official 512
    assert m1.config == dataclasses.replace(
        TINY, video=dataclasses.replace(TINY.video, text_len=512), audio=dataclasses.replace(TINY.audio, text_len=512)
    )
    assert not m1.training
    sd_file = load_file(tiny_file)
    assert all(torch.equal(sd_file[k], v) for k, v in m1.state_dict().items())
    out = tmp_path / "again.safetensors"
    save_fusion(m1, out)
    m2 = load_fusion(str(out), dtype=torch.bfloat16)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    with torch.no_grad():
        a, b = m1(*_inputs()), m2(*_inputs())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # writer is deterministic per seed
    again = write_tiny_fusion(tmp_path / "same.safetensors", seed=0)
    assert all(torch.equal(sd_file[k], v) for k, v in load_file(again).items())
    # float32 load holds the same values
    m3 = load_fusion(tiny_file, dtype=torch.float32)
    assert m3.compute_dtype == torch.float32
    assert all(torch.equal(v.float(), m3.state_dict()[k]) for k, v in m1.state_dict().items())


def test_split_tower_files(tiny_file, tmp_path):
    sd = load_file(tiny_file)
    for pre in ("video_model.", "audio_model."):
        save_file({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}, tmp_path / f"{pre[:5]}.safetensors")
    both = load_fusion([str(tmp_path / "audio.safetensors"), str(tmp_path / "video.safetensors")])
    ref = load_fusion(tiny_file)
    assert all(torch.equal(v, both.state_dict()[k]) for k, v in ref.state_dict().items())
    with pytest.raises(ck.CheckpointError, match="also pass the video tower"):
        load_fusion(str(tmp_path / "audio.safetensors"))
    with pytest.raises(ck.CheckpointError, match="both hold"):
        load_fusion([tiny_file, str(tmp_path / "video.safetensors")])


def test_fp8_file_stays_fp8_and_runs(tiny_file, tmp_path):
    ref = load_fusion(tiny_file, dtype=torch.bfloat16)
    fp8_path = tmp_path / "model_fp8_e4m3fn.safetensors"
    save_fusion(ref, fp8_path, dtype=torch.float8_e4m3fn)
    m = load_fusion(str(fp8_path), dtype=torch.bfloat16)
    assert m.video_model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert m.audio_model.patch_embedding[2].w1.weight.dtype == torch.float8_e4m3fn
    assert m.video_model.blocks[0].modulation.modulation.dtype == torch.float8_e4m3fn
    assert m.video_model.blocks[0].self_attn.norm_q.weight.dtype == torch.bfloat16
    assert m.video_model.blocks[0].self_attn.q.bias.dtype == torch.bfloat16
    assert m.compute_dtype == torch.bfloat16
    # exactly the bf16 model holding the fp8-rounded weights (upcast at call time), close to the original
    up = OviFusionModel(m.config, dtype=torch.bfloat16)
    up.load_state_dict({k: v.to(torch.bfloat16) for k, v in m.state_dict().items()})
    with torch.no_grad():
        v8, a8 = m(*_inputs(1))
        vu, au = up.eval()(*_inputs(1))
        vr, ar = ref(*_inputs(1))
    assert v8.dtype == torch.bfloat16
    assert torch.equal(v8, vu) and torch.equal(a8, au)
    assert rel(v8, vr) < 0.15 and rel(a8, ar) < 0.15


def test_wrong_file_is_named(tmp_path):
    vae_like = {
        "encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3),
        "decoder.conv1.weight": torch.zeros(8, 48, 3, 3, 3),
        "conv1.weight": torch.zeros(96, 96, 1, 1, 1),
        "conv2.weight": torch.zeros(48, 48, 1, 1, 1),
    }
    path = tmp_path / "Wan2.2_VAE.safetensors"
    save_file(vae_like, path)
    with pytest.raises(ck.CheckpointError) as e:
        load_fusion(str(path))
    msg = str(e.value)
    assert "Wan2.2_VAE.safetensors" in msg and "Wan2.2 VAE" in msg
    assert "Missing" in msg and "Unexpected" in msg and "conv1.weight" in msg
    with pytest.raises(FileNotFoundError):
        load_fusion(str(tmp_path / "absent.safetensors"))


def test_wrong_config_is_named(tiny_file):
    bigger = FusionConfig(
        video=dataclasses.replace(TINY.video, ffn_dim=256), audio=dataclasses.replace(TINY.audio, ffn_dim=256)
    )
    with pytest.raises(ck.CheckpointError, match="Shape mismatch.*ffn"):
        load_fusion(tiny_file, config=bigger)
    with pytest.raises(ValueError, match="dtype"):
        load_fusion(tiny_file, dtype=torch.float8_e4m3fn)


def test_pt_file_loads(tiny_file, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(load_file(tiny_file), path)
    m = load_fusion(str(path))
    ref = load_fusion(tiny_file)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in ref.state_dict().items())


def test_full_size_on_meta_device():
    """The official 11B config builds and runs shape-wise (meta device: no memory, no compute)."""
    m = OviFusionModel(OVI_11B, device="meta", dtype=torch.bfloat16)
    assert sum(p.numel() for p in m.parameters()) == 11_660_753_108  # "Score model (Fusion) all parameters"
    with torch.no_grad():
        v, a = m(
            torch.empty(1, 48, 2, 4, 4, device="meta"),
            torch.empty(1, 8, 20, device="meta"),
            torch.tensor([500.0]),
            torch.empty(1, 5, 4096, device="meta"),
            [torch.empty(7, 4096, device="meta")],
            first_frame_clean=True,
            slg_layer=11,
            slg_mask=torch.tensor([True]),
        )
    assert v.shape == (1, 48, 2, 4, 4) and a.shape == (1, 8, 20) and v.dtype == torch.bfloat16
