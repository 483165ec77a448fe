"""MP4/WAV writing and reading through PyAV; atomic writes."""

import math
import os
import wave

import av
import numpy as np
import pytest
import torch

from ovi_core.io.media import read_audio, read_video_frames, write_mp4, write_wav


def _smooth_frames(n, h, w):
    """Smooth moving gradients (compress well, so a decoded frame is close to its source)."""
    y = torch.linspace(0, 1, h).view(1, h, 1, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w, 1)
    t = torch.arange(n).view(n, 1, 1, 1) / n
    c = torch.tensor([0.0, 2.0, 4.0]).view(1, 1, 1, 3)
    return 0.5 + 0.4 * torch.sin(2 * math.pi * (x + y * 0.5 + t) + c)


def _tone(samples, sr=16000, hz=440.0):
    return 0.5 * torch.sin(2 * math.pi * hz * torch.arange(samples) / sr)[None]


def test_mp4_ovi_clip(tmp_path):
    """121 frames at 24 fps + 5.024 s of 16 kHz audio (80,384 samples): one h264 and one aac stream of ~5.04 s."""
    frames = _smooth_frames(121, 64, 96)
    path = tmp_path / "clip.mp4"
    assert write_mp4(path, frames, _tone(80384)[None], fps=24, sample_rate=16000) == str(path)
    assert os.listdir(tmp_path) == ["clip.mp4"]
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == "h264" and vs.codec_context.pix_fmt == "yuv420p"
        assert (vs.codec_context.width, vs.codec_context.height) == (96, 64)
        assert aus.codec_context.name == "aac" and aus.codec_context.sample_rate == 16000
        n_decoded = sum(1 for _ in c.decode(vs))
        assert n_decoded == 121
        assert abs(float(aus.duration * aus.time_base) - 121 / 24) < 0.03
    back = read_video_frames(path)
    assert back.shape == (121, 64, 96, 3) and back.dtype == torch.uint8
    assert (back.float() / 255 - frames).abs().mean() < 0.02
    assert read_video_frames(path, max_frames=5).shape[0] == 5
    audio, sr = read_audio(path)
    assert sr == 16000 and audio.dtype == torch.float32 and audio.shape[0] == 1
    assert abs(audio.shape[1] / sr - 121 / 24) < 0.05
    # the tone survives the codec (compare spectra around 440 Hz)
    spec = torch.fft.rfft(audio[0, 2000:14000]).abs()
    assert 430 < spec.argmax().item() * 16000 / 12000 < 450


def test_mp4_audio_trimmed_and_padded(tmp_path):
    for samples in (4000, 40000):  # 0.25 s and 2.5 s against 1 s of video
        p = tmp_path / f"a{samples}.mp4"
        write_mp4(p, torch.zeros(24, 32, 32, 3, dtype=torch.uint8), _tone(samples), fps=24)
        audio, sr = read_audio(p)
        assert abs(audio.shape[1] / sr - 1.0) < 0.1


def test_mp4_odd_size_and_no_audio(tmp_path):
    p = tmp_path / "odd.mp4"
    write_mp4(p, torch.rand(3, 33, 47, 3), None)
    with av.open(str(p)) as c:
        assert len(c.streams.audio) == 0
    assert read_video_frames(p).shape == (3, 34, 48, 3)


def test_failed_write_leaves_nothing(tmp_path):
    dest = tmp_path / "out.mp4"

    def frames():  # a streaming source that breaks after two good frames
        yield torch.rand(32, 32, 3)
        yield torch.rand(32, 32, 3)
        yield torch.rand(32, 30, 3)

    with pytest.raises(ValueError, match="frame 2"):
        write_mp4(dest, frames(), _tone(16000))
    assert os.listdir(tmp_path) == []

    def interrupted():
        yield torch.rand(32, 32, 3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_mp4(dest, interrupted(), None)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="F, H, W, 3"):
        write_mp4(dest, torch.rand(4, 32, 32), None)
    assert os.listdir(tmp_path) == []
    # an existing file is left untouched by a failed overwrite
    dest.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_mp4(dest, frames(), None)
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.mp4"]


def test_wav_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 1000, generator=g) * 2 - 1) * 0.9
    p = tmp_path / "s.wav"
    write_wav(p, x, sample_rate=16000)
    with wave.open(str(p)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (2, 2, 16000, 1000)
        raw = np.frombuffer(f.readframes(1000), dtype="<i2").reshape(1000, 2).T
    assert np.array_equal(raw, (x * 32767).to(torch.int16).numpy())
    back, sr = read_audio(p)
    assert sr == 16000 and back.shape == (2, 1000)
    assert (back - x).abs().max() < 2 / 32767
    # ComfyUI AUDIO layout [1, C, T] and clipping
    write_wav(p, torch.tensor([[[2.0, -2.0, 0.5]]]), sample_rate=8000)
    back, sr = read_audio(p)
    assert sr == 8000 and back.shape == (1, 3)
    assert torch.allclose(back, torch.tensor([[32767, -32767, 16383]]) / 32768.0, atol=1e-6)
    assert os.listdir(tmp_path) == ["s.wav"]


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
    p = tmp_path / "v.mp4"
    write_mp4(p, torch.zeros(2, 32, 32, 3), None)
    with pytest.raises(ValueError, match="no audio"):
        read_audio(p)
    with pytest.raises(ValueError, match="1 or 2 channels"):
        write_wav(tmp_path / "x.wav", torch.zeros(3, 10), sample_rate=16000)


def test_h264_encoder_fallback(tmp_path, monkeypatch):
    import ovi_core.io.media as media

    if "libopenh264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libopenh264")
    monkeypatch.setattr(media, "H264_ENCODERS", ("no_such_encoder", "libopenh264"))
    p = tmp_path / "fallback.mp4"
    write_mp4(p, _smooth_frames(6, 32, 64), _tone(4000))
    with av.open(str(p)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    assert read_video_frames(p).shape == (6, 32, 64, 3)
    monkeypatch.setattr(media, "H264_ENCODERS", ("no_such_encoder",))
    with pytest.raises(RuntimeError, match="no H.264 encoder"):
        write_mp4(tmp_path / "none.mp4", _smooth_frames(2, 32, 32), None)
    assert os.listdir(tmp_path) == ["fallback.mp4"]


def test_fractional_fps_and_file_mode(tmp_path):
    frames = torch.rand(6, 32, 32, 3)
    out = write_mp4(tmp_path / "f.mp4", frames, torch.zeros(1, 4000), fps=23.976, sample_rate=16000)
    with av.open(out) as c:
        assert abs(float(c.streams.video[0].average_rate) - 23.976) < 1e-3
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask
