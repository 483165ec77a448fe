"""Dataset preparation with the real (tiny) codecs and text encoder: clips -> cached latents; bad clips skipped."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.cli.main import main
from ovi_core.io.media import write_mp4
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
    from ovi_core.training.config import TrainConfig
    from ovi_core.training.trainer import train

    cfg = TrainConfig(dataset=str(out), model=str(root / "weights" / "Ovi" / "model.safetensors"),
                      output_dir=str(root / "run"), steps=2, rank=2, mixed_precision="no", save_every=0)
    res = train(cfg)
    assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    from ovi_core.lora.model import lora_info

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


def _mkv(path: str, *, frames: int, audio_samples: int, hw=(64, 64), sr=16000) -> None:
    """A Matroska clip: ``frames`` at 24 fps (mpeg4) and exactly ``audio_samples`` of 16-bit PCM."""
    import av
    import numpy as np

    with av.open(path, "w", format="matroska") as c:
        vs = c.add_stream("mpeg4", rate=24)
        vs.height, vs.width, vs.pix_fmt = hw[0], hw[1], "yuv420p"
        aus = c.add_stream("pcm_s16le", rate=sr, layout="mono")
        g = torch.Generator().manual_seed(0)
        for _ in range(frames):
            img = (torch.rand(*hw, 3, generator=g) * 255).to(torch.uint8).numpy()
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(audio_samples) / sr
        wav = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        for k in range(0, audio_samples, 1024):
            f = av.AudioFrame.from_ndarray(wav[None, k:k + 1024], format="s16", layout="mono")
            f.sample_rate = sr
            for p in aus.encode(f):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)


def test_an_exact_five_second_matroska_clip_is_kept(setup, tmp_path):
    """121 frames and 5.04 s of audio: 157 audio latents need 157 * 512 / 16000 = 5.024 s, not 121 / 24 s."""
    from ovi_core.training.dataset import PrepareConfig, prepare_from_weights

    cfg = PrepareConfig(height=64, width=64)  # the 5 s model: 121 frames at 24 fps, 157 audio latents
    assert cfg.num_audio_tokens == 157 and cfg.audio_samples(16000) == 80384 and cfg.audio_samples(44100) == 221559
    src = tmp_path / "clips"
    src.mkdir()
    _mkv(str(src / "exact.mkv"), frames=121, audio_samples=80640)  # 5.04 s
    (src / "exact.txt").write_text("A tone. <AUDCAP>A tone.<ENDAUDCAP>")
    _mkv(str(src / "short.mkv"), frames=121, audio_samples=80000)  # 5.0 s: 156 latents only
    (src / "short.txt").write_text("A tone. <AUDCAP>A tone.<ENDAUDCAP>")
    _, audio, sr = read_clip(str(src / "exact.mkv"), frames=121, fps=24.0, audio_latents=157)
    assert sr == 16000 and audio.shape == (1, 80384)
    with pytest.raises(ValueError, match="too short"):  # the old check (121 / 24 s of audio) refused it
        read_clip(str(src / "exact.mkv"), frames=121, fps=24.0, audio_seconds=121 / 24)
    rep = prepare_from_weights(str(src), str(tmp_path / "out"), weights=str(setup / "weights"), config=cfg, device="cpu")
    assert rep.kept == ["exact"] and [s["file"] for s in rep.skipped] == ["short.mkv"]
    assert "too short" in rep.skipped[0]["reason"]
    t = load_file(str(tmp_path / "out" / "exact.safetensors"))
    assert t["audio_latent"].shape == (157, 20) and t["video_latent"].shape == (48, 31, 4, 4)


@pytest.mark.parametrize("args, match", [
    (["--height", "1000000", "--width", "64"], "multiples of 32 between 32 and 4096"),
    (["--height", "4096", "--width", "4096"], "more than Ovi 1.0's training area"),
    (["--area", "100000000000"], "area 100000000000 must be between"),
    (["--frames", "100001"], "longer than any Ovi model"),
    (["--fps", "0"], "fps must be between"),
    (["--audio-tokens", "100000000"], "audio_tokens must be between"),
])
def test_prepare_dataset_refuses_huge_sizes_before_loading_anything(setup, tmp_path, capsys, args, match):
    # the weights folder does not exist: an error about it would mean the sizes were checked too late
    rc = main(["prepare-dataset", str(setup / "clips"), str(tmp_path / "out"), "--weights", str(tmp_path / "none"),
               *args])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(match, err), err
    assert not (tmp_path / "out").exists()


def test_frames_are_scaled_down_while_decoding(setup, tmp_path):
    """A source larger than needed never lives in memory at full size; the result is the one of scaling the
    full frames, up to the rounding of the scaled frames to 8 bits (one grey level)."""
    from ovi_core.training.dataset import frames_to_model

    p = str(tmp_path / "big.mp4")
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 10, generator=g), size=(256, 320), mode="bilinear")
    video = smooth[0].permute(1, 2, 0)[None].expand(9, -1, -1, -1).contiguous()
    write_mp4(p, video, torch.zeros(1, 16000), fps=24, sample_rate=16000)
    small, _, _ = read_clip(p, frames=9, fps=24.0, audio_latents=4, size=(64, 64))
    full, _, _ = read_clip(p, frames=9, fps=24.0, audio_latents=4)
    assert full.shape[1:3] == (256, 320) and small.shape[1:3] == (64, 80)  # cover size of 64x64 at 4:5
    a = frames_to_model(small, height=64, width=64)
    b = frames_to_model(full, height=64, width=64)
    assert a.shape == b.shape == (1, 3, 9, 64, 64)
    assert float((a - b).abs().max()) <= 1 / 127.5 + 1e-5 and float((a - b).abs().mean()) < 0.003
