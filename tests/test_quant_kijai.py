"""kijai's Ovi files: split video/audio pair, combined file, fp8_e4m3fn_scaled; strict errors name the format."""

import json

import pytest
import torch
from quant_utils import CFG, forward, rel, write_source
from safetensors.torch import load_file, save_file

from ovi_core.cli import main as cli
from ovi_core.io import checkpoints as ck
from ovi_core.model.loader import load_fusion
from ovi_core.quant.kijai import kijai_state_dicts, layout_of, write_kijai_files
from ovi_core.quant.tensor import QuantizedWeight


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("kj")
    path = str(d / "model.safetensors")
    write_source(path)
    return path, load_file(path), d


def test_layout_is_kijai_naming(official):
    _, sd, _ = official
    video, audio = kijai_state_dicts(sd)
    assert "blocks.0.modulation" in video and "blocks.0.cross_attn.k_fusion.weight" in video
    assert not any(k.startswith("video_model.") for k in video)
    assert "audio_model.blocks.0.modulation" in audio and "audio_model.patch_embedding.0.weight" in audio
    lay = layout_of({k: tuple(v.shape) for k, v in video.items()})
    assert lay.towers == ("video",) and lay.style == "kijai"
    assert lay.names["video_model.blocks.0.modulation.modulation"] == "blocks.0.modulation"


@pytest.mark.parametrize("combined", [False, True])
def test_split_and_combined_bf16_equal_official(official, tmp_path, combined):
    path, sd, _ = official
    files = write_kijai_files(sd, tmp_path, combined=combined)
    ref = load_fusion(path, dtype=torch.float32, config=CFG)
    got = load_fusion(files if len(files) > 1 else files[0], dtype=torch.float32, config=CFG)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k
    # either order of the pair
    if not combined:
        load_fusion(files[::-1], dtype=torch.float32, config=CFG)


def test_fp8_scaled_pair(official, tmp_path):
    path, sd, _ = official
    files = write_kijai_files(sd, tmp_path, fp8_scaled=True)
    st = load_file(files[0])
    assert "scaled_fp8" in st and st["blocks.0.self_attn.q.weight"].dtype == torch.float8_e4m3fn
    assert st["blocks.0.self_attn.q.scale_weight"].numel() == 1
    assert st["blocks.0.self_attn.norm_q.weight"].dtype == torch.bfloat16
    model = load_fusion(files, dtype=torch.float32, config=CFG)
    w = model.video_model.blocks[0].self_attn.q.weight
    assert isinstance(w, QuantizedWeight) and w.format_name == "fp8_scaled"
    # the weight used is fp8.to(dtype) * scale_weight
    expect = st["blocks.0.self_attn.q.weight"].float() * st["blocks.0.self_attn.q.scale_weight"].float()
    assert torch.equal(w.to(torch.float32), expect)
    ref = forward(load_fusion(path, dtype=torch.float32, config=CFG))
    got = forward(model)
    assert rel(got[0], ref[0]) < 0.06 and rel(got[1], ref[1]) < 0.06


def test_video_file_alone_names_the_format(official, tmp_path):
    _, sd, _ = official
    vp, ap = write_kijai_files(sd, tmp_path, fp8_scaled=True)
    with pytest.raises(ck.CheckpointError, match=r"only the video tower.*fp8_e4m3fn_scaled.*kijai.*audio"):
        load_fusion(vp, dtype=torch.float32)
    with pytest.raises(ck.CheckpointError, match=r"only the audio tower.*also pass the video"):
        load_fusion(ap, dtype=torch.float32)
    with pytest.raises(ck.CheckpointError, match="both hold"):
        load_fusion([vp, vp], dtype=torch.float32)


def test_broken_scaled_files_fail_clearly(official, tmp_path):
    _, sd, _ = official
    video, audio = kijai_state_dicts(sd, fp8_scaled=True)
    ap = str(tmp_path / "a.safetensors")
    save_file(audio, ap)
    orphan = dict(video)
    orphan["blocks.0.self_attn.zz.scale_weight"] = torch.tensor(1.0)
    p = str(tmp_path / "orphan.safetensors")
    save_file(orphan, p)
    with pytest.raises(ck.CheckpointError, match="fp8_e4m3fn_scaled.*has no weight"):
        load_fusion([p, ap], dtype=torch.float32)
    per_channel = dict(video)
    per_channel["blocks.0.self_attn.q.scale_weight"] = torch.ones(CFG.video.dim)
    p2 = str(tmp_path / "pc.safetensors")
    save_file(per_channel, p2)
    with pytest.raises(ValueError, match="per-tensor"):
        load_fusion([p2, ap], dtype=torch.float32, config=CFG)
    missing = {k: v for k, v in video.items() if not k.startswith("blocks.1.ffn.0.")}
    missing.pop("blocks.1.ffn.0.bias", None)
    p3 = str(tmp_path / "missing.safetensors")
    save_file(missing, p3)
    with pytest.raises(ck.CheckpointError, match=r"Missing 2 tensors: video_model.blocks.1.ffn.0.bias, video_model.blocks.1.ffn.0.weight"):
        load_fusion([p3, ap], dtype=torch.float32, config=CFG)


def test_inspect_names_kijai_formats(official, tmp_path, capsys):
    _, sd, _ = official
    vp, ap = write_kijai_files(sd, tmp_path, fp8_scaled=True)
    assert cli.main(["inspect", vp]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "fp8_e4m3fn_scaled" in rep["format"] and "kijai" in rep["format"] and "video tower" in rep["format"]
    assert any("audio tower file" in n for n in rep["notes"])
