"""OviLoadAudio / OviLoadVideo: the input folder's sound and frames through the project's safe media reader.

Core LoadAudio reads an ffconcat list named ``voice.wav`` and so the file it names (seen on ComfyUI 0.33.0); these
nodes refuse it, naming the format, and read plain files as core's loaders would."""

import os
import wave

import av
import numpy as np
import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS as N


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_INPUT_DIR", str(tmp_path))
    with wave.open(str(tmp_path / "voice.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(22050)
        x = (0.25 * np.sin(np.arange(22050) / 7.0) * 32767).astype("<i2")
        f.writeframes(np.stack([x, -x], 1).tobytes())
    (tmp_path / "secret.txt").write_text("not for you")
    (tmp_path / "list.wav").write_text("ffconcat version 1.0\nfile voice.wav\n")
    (tmp_path / "play.mp4").write_text("#EXTM3U\n#EXT-X-VERSION:3\nvoice.wav\n")
    with av.open(str(tmp_path / "clip.mp4"), "w") as c:
        s = c.add_stream("mpeg4", rate=12)
        s.width, s.height, s.pix_fmt = 32, 16, "yuv420p"
        for i in range(6):
            img = np.full((16, 32, 3), 40 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return tmp_path


def test_files_are_listed_and_read_like_core_loaders(inputs):
    names = N["OviLoadAudio"].INPUT_TYPES()["required"]["audio"][0]
    assert "voice.wav" in names and "secret.txt" not in names
    (audio,) = N["OviLoadAudio"]().load("voice.wav")
    assert audio["sample_rate"] == 22050 and audio["waveform"].shape == (1, 2, 22050)
    assert torch.allclose(audio["waveform"][0, 0], -audio["waveform"][0, 1])
    assert "clip.mp4" in N["OviLoadVideo"].INPUT_TYPES()["required"]["video"][0]
    images, fps = N["OviLoadVideo"]().load("clip.mp4")
    assert images.shape == (6, 16, 32, 3) and images.dtype == torch.float32 and fps == 12.0
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


def test_lists_and_playlists_are_refused_naming_the_format(inputs):
    with pytest.raises(ValueError, match=r"list\.wav.*concat"):
        N["OviLoadAudio"]().load("list.wav")
    with pytest.raises(ValueError, match=r"play\.mp4.*(M3U|HLS|hls)"):
        N["OviLoadVideo"]().load("play.mp4")


def test_names_outside_the_input_folder_are_refused(inputs, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "x.wav"
    outside.write_bytes((inputs / "voice.wav").read_bytes())
    os.symlink(outside, inputs / "link.wav")
    for name in ("../" + outside.parent.name + "/x.wav", str(outside), "link.wav"):
        with pytest.raises(ValueError, match="not inside ComfyUI's input folder"):
            N["OviLoadAudio"]().load(name)
