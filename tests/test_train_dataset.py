"""Dataset preparation with the real (tiny) codecs and text encoder: clips -> cached latents; bad clips skipped."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.cli import main
from ovi_core.media import write_mp4
from ovi_core.tiny import write_tiny_weights
from ovi_core.training.dataset import LatentDataset, read_clip


def _clip(path: str, *, frames: int, seconds: float, hw=(72, 96), seed=0) -> None:
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, *hw, 3, generator=g)
    t = torch.arange(int(seconds * 16000)) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440 * t))[None]
    write_mp4(path, video, wav, fps=24, sample_rate=16000)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    weights = root / "weights"
    write_tiny_weights(str(weights))
    src = root / "clips"
    src.mkdir()
    for i in range(2):
        _clip(str(src / f"good{i}.mp4"), frames=12, seconds=0.5, seed=i)
        (src / f"good{i}.txt").write_text(f"A test clip number {i}. <S>Hello.<E> <AUDCAP>A tone.<ENDAUDCAP>")
    _clip(str(src / "short.mp4"), frames=4, seconds=0.5)
    (src / "short.txt").write_text("too short")
    _clip(str(src / "nocaption.mp4"), frames=12, seconds=0.5)
    (src / "broken.mkv").write_bytes(b"not a video at all")
    (src / "broken.txt").write_text("broken")
    return root


def test_prepare_dataset_cli_encodes_good_clips_and_lists_bad_ones(setup):
    root = setup
    out = root / "prepared"
    rc = main(["prepare-dataset", str(root / "clips"), str(out), "--weights", str(root / "weights"),
               "--frames", "9", "--height", "64", "--width", "64", "--device", "cpu"])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    assert [it["name"] for it in index["items"]] == ["good0", "good1"]
    reasons = {s["file"]: s["reason"] for s in index["skipped"]}
    assert set(reasons) == {"broken.mkv", "nocaption.mp4", "short.mp4"}
    assert "too short" in reasons["short.mp4"] and "caption" in reasons["nocaption.mp4"]
    assert "cannot open" in reasons["broken.mkv"]
    t = load_file(str(out / "good0.safetensors"))
    assert t["video_latent"].shape == (48, 3, 4, 4)  # 9 frames -> 3 latent frames, 64 px -> 4
    assert t["audio_latent"].shape == (12, 20)  # round(9 / 24 * 31.25)
    assert t["text_embedding"].ndim == 2 and torch.isfinite(t["text_embedding"]).all()
    assert not torch.equal(t["video_latent"], load_file(str(out / "good1.safetensors"))["video_latent"])
    ds = LatentDataset(str(out))
    assert len(ds) == 2 and ds.skipped[0]["file"] == "broken.mkv"

    # the prepared clips train with the tiny fusion model of the same weight set (fusion file of Ovi 1.0)
    from ovi_core.training import TrainConfig, train

    cfg = TrainConfig(dataset=str(out), model=str(root / "weights" / "Ovi" / "model.safetensors"),
                      output_dir=str(root / "run"), steps=2, rank=2, mixed_precision="no", save_every=0)
    res = train(cfg)
    assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    from ovi_core.lora import lora_info

    assert lora_info(res.lora_path).base_version == "1.0"


def test_read_clip_resamples_frame_rate(setup):
    p = str(setup / "clips" / "good0.mp4")
    video, audio, sr = read_clip(p, frames=5, fps=12.0, audio_seconds=0.25)
    assert video.shape[0] == 5 and video.dtype == torch.uint8
    full, _, _ = read_clip(p, frames=9, fps=24.0, audio_seconds=0.25)
    assert torch.equal(video[1], full[2]) and torch.equal(video[4], full[8])  # every other frame at 12 fps
    assert sr == 16000 and audio.shape == (1, 4000)
    with pytest.raises(ValueError, match="too short"):
        read_clip(p, frames=9, fps=24.0, audio_seconds=2.0)
    assert os.path.isfile(p)
