"""Hostile media, round 2: containers that read other files (concat lists, playlists), audio that crashed or
exhausted memory (many channels, odd sample rates), video whose frame size changes part-way, variable frame rates
(the command-line and file checks are in test_hardening2_inputs.py)."""

import os
import subprocess
import sys
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from ovi_core.conditioning.audio_in import to_mono_16k
from ovi_core.io import media

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wav(path, channels=1, rate=16000, seconds=0.25, hz=440.0, amp=0.5):
    n = int(rate * seconds)
    t = np.arange(n) / rate
    tone = amp * np.sin(2 * np.pi * hz * t)
    x = np.repeat(tone[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((x * 32767).astype("<i2").tobytes())
    return str(path)


# --- 1. containers that read other files -----------------------------------------------------------------------


def test_ffconcat_named_wav_is_refused_naming_the_format(tmp_path):
    """An ffconcat list named voice.wav made FFmpeg read the file it lists (its samples came back as the voice)."""
    _wav(tmp_path / "secret.wav")
    voice = tmp_path / "voice.wav"
    voice.write_text("ffconcat version 1.0\nfile 'secret.wav'\n")
    with pytest.raises(ValueError, match=r"voice\.wav.*concat list.*'concat'.*not read for safety"):
        media.read_audio(voice)
    with pytest.raises(ValueError, match="concat"):
        media.read_video_frames(voice)
    with pytest.raises(ValueError, match="concat"):
        media.read_image(voice)


def test_m3u8_playlist_is_refused(tmp_path):
    _wav(tmp_path / "secret.wav")
    for name in ("list.m3u8", "voice.wav"):
        pl = tmp_path / name
        pl.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.25,\nsecret.wav\n#EXT-X-ENDLIST\n")
        with pytest.raises(ValueError, match=r"M3U/HLS playlist.*not read for safety"):
            media.read_audio(pl)
    with pytest.raises(ValueError, match="'hls'"):  # FFmpeg detects it by content and name
        media.read_audio(tmp_path / "list.m3u8")


def test_protocol_prefixes_are_plain_file_names(tmp_path, monkeypatch):
    """``concat:a|b`` / ``subfile:`` are protocols to FFmpeg; here they are only ever names of local files."""
    a = _wav(tmp_path / "a.wav")
    monkeypatch.chdir(tmp_path)
    for name in (f"concat:{a}|{a}", f"subfile,,start,0,end,100,,:{a}", "file:" + a + "x"):
        with pytest.raises(FileNotFoundError, match="not found"):
            media.read_audio(name)
    # a local file whose name starts like a protocol is read as that file, not as the protocol
    odd = tmp_path / "concat:a.wav"
    _wav(odd, seconds=0.5)
    w, sr = media.read_audio("concat:a.wav")
    assert sr == 16000 and w.shape == (1, 8000)


def test_folder_and_fifo_are_refused_without_hanging(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        media.read_audio(tmp_path)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        media.read_audio(fifo)


def test_allowed_formats_still_read(tmp_path):
    w, sr = media.read_audio(_wav(tmp_path / "s.wav", channels=2))
    assert sr == 16000 and w.shape == (2, 4000)
    img = tmp_path / "a.png"
    with av.open(str(img), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = 8, 6, "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((6, 8, 3), np.uint8), format="rgb24")):
            c.mux(p)
    assert media.read_image(img).shape == (6, 8, 3)
    mp4 = tmp_path / "c.mp4"
    media.write_mp4(mp4, torch.zeros(3, 16, 16, 3), torch.zeros(1, 2000), fps=24)
    frames, fps = media.read_video(mp4)
    assert frames.shape == (3, 16, 16, 3) and fps == 24.0


def test_every_media_open_goes_through_open_media():
    """No module but io/media.py calls ``av.open`` for reading (the allow-list lives in one place)."""
    offenders = []
    for folder in ("ovi_core", "nodes"):
        for dp, _dn, fn in os.walk(os.path.join(ROOT, folder)):
            for f in fn:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dp, f)
                for i, line in enumerate(open(path, encoding="utf-8"), 1):
                    if "av.open(" in line and 'mode="w"' not in line and not path.endswith(os.path.join("io", "media.py")):
                        offenders.append(f"{os.path.relpath(path, ROOT)}:{i}")
    assert offenders == []


# --- 2. crashes and runaway memory ------------------------------------------------------------------------------


def test_eight_channel_wav_is_mixed_to_mono_not_a_crash(tmp_path):
    """An 8-channel WAV killed the process (SIGSEGV in the converter for an unnamed layout); run in a child."""
    path = _wav(tmp_path / "eight.wav", channels=8, rate=48000, seconds=0.2)
    code = ("import sys; from ovi_core.io.media import read_audio; w, sr = read_audio(sys.argv[1]); "
            "print(tuple(w.shape), sr, round(float(w.abs().max()), 2))")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[0] == "(1, 9600) 48000 0.5"


def test_audio_caps(tmp_path):
    with pytest.raises(ValueError, match="longer than 0.1 s"):
        media.read_audio(_wav(tmp_path / "long.wav", seconds=0.3), max_seconds=0.1)
    with pytest.raises(ValueError, match="800000 Hz is outside"):
        media.read_audio(_wav(tmp_path / "fast.wav", rate=800000, seconds=0.01))


def test_odd_rate_resample_is_bounded(tmp_path):
    """44,101 Hz -> 16 kHz asked torchaudio for a 16000 x 44135 kernel (2.8 GB); now it fits in 1 GiB of address
    space on top of what the process already has (checked in a child with RLIMIT_AS)."""
    code = (
        "import resource, torch; from ovi_core.conditioning.audio_in import to_mono_16k\n"
        "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))\n"
        "print(tuple(to_mono_16k(torch.randn(2, 4410), 44101).shape))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "(1600,)"


def test_resample_ratio_exact_for_usual_rates_bounded_for_odd_ones():
    from ovi_core.audio.resample import MAX_KERNEL, TOLERANCE, ratio, resample

    for rate in (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000):
        o, n = ratio(rate, 16000)
        assert Fraction(o, n) == Fraction(rate, 16000)
    for rate in (1001, 44101, 47999, 96001, 192001, 767999):
        for a, b in ((rate, 16000), (16000, rate)):
            o, n = ratio(a, b)
            assert o * n <= MAX_KERNEL * 1.01
            assert abs(Fraction(o, n) / Fraction(a, b) - 1) < TOLERANCE
    # usual rates: the very same numbers as torchaudio's own call
    import torchaudio.functional as AF

    x = torch.randn(4410)
    assert torch.equal(resample(x, 44100, 16000), AF.resample(x, 44100, 16000))
    # odd rate: a 1 kHz tone stays at 1 kHz and the length is right
    t = torch.arange(44101) / 44101
    y = resample(torch.sin(2 * torch.pi * 1000 * t), 44101, 16000)
    assert y.shape[-1] == 16000
    assert abs(int(torch.fft.rfft(y).abs().argmax()) - 1000) <= 1


def test_downmix_before_resample(tmp_path):
    """Opposite channels cancel in the mono mix, whatever the rate."""
    w = torch.stack([torch.ones(4410), -torch.ones(4410)])
    assert to_mono_16k(w, 44101).abs().max() < 1e-6


def _write_size_changing_mkv(path, n=6, audio=False):
    """MJPEG in Matroska: ``n // 2`` 32x24 frames, then 48x40 frames, in one stream (plus 16 kHz PCM audio)."""
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("mjpeg", rate=24)
        s.width, s.height, s.pix_fmt = 32, 24, "yuvj420p"
        other = av.CodecContext.create("mjpeg", "w")
        other.width, other.height, other.pix_fmt, other.time_base = 48, 40, "yuvj420p", Fraction(1, 24)
        a = c.add_stream("pcm_s16le", rate=16000) if audio else None
        for i in range(n):
            h, w, enc = (24, 32, s.codec_context) if i < n // 2 else (40, 48, other)
            f = av.VideoFrame.from_ndarray(np.full((h, w, 3), 200 * i // n, np.uint8), format="rgb24")
            f = f.reformat(format="yuvj420p")
            f.pts = i
            for p in enc.encode(f):
                p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, 24)
                c.mux(p)
        if a is not None:
            pcm = (np.sin(np.arange(16000 * n // 24) * 0.1) * 8000).astype(np.int16)[None]
            af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode(None):
                c.mux(p)


def test_video_size_change_midstream_is_normalised(tmp_path):
    """Raised a raw 'stack expects each tensor to be equal size'."""
    path = tmp_path / "change.mkv"
    _write_size_changing_mkv(path)
    frames, fps = media.read_video(path)
    assert frames.shape == (6, 24, 32, 3) and fps == 24.0
    assert abs(float(frames[5].float().mean()) - 166) < 8  # the scaled frames keep their content


def test_training_clip_size_change_midstream(tmp_path):
    from ovi_core.training.dataset import read_clip

    path = tmp_path / "change.mkv"
    _write_size_changing_mkv(path, n=24, audio=True)
    video, audio, sr = read_clip(str(path), frames=17, fps=24, audio_seconds=0.5)
    assert video.shape == (17, 24, 32, 3) and sr == 16000 and audio.shape[-1] >= 8000


def _write_timed_mkv(path, times_ms):
    """MJPEG in Matroska, one frame per timestamp (ms), frame i filled with 20 * i."""
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("mjpeg", rate=24)
        s.width, s.height, s.pix_fmt = 32, 24, "yuvj420p"
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 20 * i, np.uint8), format="rgb24")
            f = f.reformat(format="yuvj420p")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                p.pts, p.dts, p.time_base = t, t, Fraction(1, 1000)
                c.mux(p)


def test_variable_frame_rate_video_is_placed_by_timestamps(tmp_path):
    """VFR video was read as constant rate: a frame shown at 0.5 s landed at 0.125 s."""
    vfr = tmp_path / "vfr.mkv"
    _write_timed_mkv(vfr, [0, 42, 83, 500, 542, 1000])
    frames, fps = media.read_video(vfr)
    assert fps == 24.0 and frames.shape[0] == 25
    level = [round(float(f.float().mean()) / 20) for f in frames]  # which source frame each tick shows
    assert level[:3] == [0, 1, 2] and level[11] == 2 and level[12] == 3 and level[13] == 4 and level[24] == 5
    cfr = tmp_path / "cfr.mkv"  # a constant-rate file (ms timestamps, rounded) comes back frame for frame
    _write_timed_mkv(cfr, [0, 42, 83, 125, 167])
    assert media.read_video(cfr)[0].shape[0] == 5
