"""Hostile media and files, round 2: containers that read other files (concat lists, playlists), audio that
crashed or exhausted memory (many channels, odd sample rates), video whose size changes part-way, and raw
exceptions on the command line turned into messages that name the file or flag."""

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


# --- 3. raw exceptions -> messages naming the file or flag, before the weights load --------------------------------

PROMPT = "A man in a red coat says <S>Hello.<E> Audio: clear male voice."


@pytest.fixture(scope="module")
def broken_weights(tmp_path_factory):
    """Tiny weights whose VAE is garbage: a run that gets as far as loading fails on it (and says so)."""
    from ovi_core.tiny import write_tiny_weights

    root = str(tmp_path_factory.mktemp("w2") / "w")
    write_tiny_weights(root)
    with open(os.path.join(root, "Wan2.2-TI2V-5B", "Wan2.2_VAE.pth"), "wb") as f:
        f.write(b"not a checkpoint" * 64)
    return root


def _run(weights, tmp_path, capsys, *extra, prompt=PROMPT):
    from ovi_core.cli import main as cli

    args = ["generate", "--weights", weights, "--steps", "1", "--offline", "--out", str(tmp_path / "o.mp4")]
    if prompt is not None:
        args += ["--prompt", prompt]
    try:
        rc = cli.main([*args, *extra])
    except SystemExit as e:  # argparse refusals
        rc = e.code
    err = capsys.readouterr().err
    assert "Wan2.2_VAE" not in err, err  # refused before any weights load
    return rc, err


def _latents(path, video=None, audio=None):
    from safetensors.torch import save_file

    video = torch.zeros(1, 48, 31, 4, 4) if video is None else video
    audio = torch.zeros(1, 157, 20) if audio is None else audio
    save_file({"video": video, "audio": audio}, str(path), metadata={"ovi.version": "1.1", "ovi.fps": "24"})
    return str(path)


def test_damaged_source_latents_are_named(broken_weights, tmp_path, capsys):
    """Random bytes, a pickle and a truncated file gave a raw SafetensorError; NaN latents reached the sampler."""
    rnd = tmp_path / "rand.ovi_latents.safetensors"
    rnd.write_bytes(np.random.default_rng(0).bytes(600))
    pick = tmp_path / "pick.ovi_latents.safetensors"
    torch.save({"video": torch.zeros(2)}, pick)
    good = open(_latents(tmp_path / "good.safetensors"), "rb").read()
    trunc = tmp_path / "trunc.ovi_latents.safetensors"
    trunc.write_bytes(good[: len(good) // 2])
    for p in (rnd, pick, trunc):
        rc, err = _run(broken_weights, tmp_path, capsys, "--source", str(p), "--redo", "audio:1-2")
        assert rc == 2 and p.name in err and "saved Ovi latents" in err and "damaged" in err, err
    nan = _latents(tmp_path / "nan.safetensors", video=torch.full((1, 48, 31, 4, 4), float("nan")))
    rc, err = _run(broken_weights, tmp_path, capsys, "--source", nan, "--redo", "audio:1-2")
    assert rc == 2 and "NaN" in err


@pytest.mark.parametrize("value", ["inf", "nan", "-1e400"])
def test_non_finite_overlap(broken_weights, tmp_path, capsys, value):
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", f"--overlap={value}")
    assert rc == 2 and "overlap must be between" in err and ("nan" in err or "inf" in err)


def test_prompt_txt_files(broken_weights, tmp_path, capsys):
    lat = tmp_path / "latin1.txt"
    lat.write_bytes("Un caf\u00e9 <S>hi<E>\n".encode("latin-1"))
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", prompt=str(lat))
    assert rc == 2 and "latin1.txt" in err and "not UTF-8" in err and "0xe9" in err
    # a missing .txt was the prompt text of every window
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", prompt=str(tmp_path / "typo.txt"))
    assert rc == 2 and "prompt file not found" in err and "typo.txt" in err
    (tmp_path / "d.txt").mkdir()
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", prompt=str(tmp_path / "d.txt"))
    assert rc == 2 and "is a folder" in err


@pytest.mark.parametrize("flag", ["--audio", "--video", "--image", "--lora", "--fusion", "--source"])
def test_folder_or_fifo_given_as_a_file(broken_weights, tmp_path, capsys, flag):
    """A folder said 'file not found'; a FIFO said 'not found' (or would hang when opened)."""
    folder = tmp_path / "f.dat"
    folder.mkdir()
    fifo = tmp_path / "p.dat"
    os.mkfifo(fifo)
    extra = ["--redo", "audio:1-2"] if flag == "--source" else []
    rc, err = _run(broken_weights, tmp_path, capsys, flag, str(folder), *extra)
    assert rc == 2 and "is a folder" in err and "f.dat" in err, err
    rc, err = _run(broken_weights, tmp_path, capsys, flag, str(fifo), *extra)
    assert rc == 2 and "FIFO" in err and "p.dat" in err, err


def test_lora_spec_words(broken_weights, tmp_path, capsys):
    lora = _latents(tmp_path / "l.safetensors")  # any existing file: the spec is refused before it is read
    rc, err = _run(broken_weights, tmp_path, capsys, "--lora", f"{lora}:0.5:vidoe")
    assert rc == 2 and "unknown tower 'vidoe'" in err and "video, audio, both, auto" in err
    for bad in ("nan", "inf"):
        rc, err = _run(broken_weights, tmp_path, capsys, "--lora", f"{lora}:{bad}")
        assert rc == 2 and "finite" in err


def test_guide_until_needs_a_guide(broken_weights, tmp_path, capsys):
    rc, err = _run(broken_weights, tmp_path, capsys, "--guide-until", "0.5")
    assert rc == 2 and "--guide-until applies to a guide" in err
    rc, err = _run(broken_weights, tmp_path, capsys, "--guide-until", "0.5", "--seconds", "12")
    assert rc == 2 and "--guide-until applies to a guide" in err


# --- 4. silently wrong ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("video", "audio", "message"), [
    (torch.zeros(1, 48, 31, 4, 4, dtype=torch.int64), None, "int64, not floating point"),
    (torch.zeros(1, 48, 31, 4, 4, dtype=torch.bool), None, "bool, not floating point"),
    (torch.zeros(2, 48, 31, 4, 4), torch.zeros(2, 157, 20), "batch of 2"),
    (None, torch.full((1, 157, 20), float("inf")), "NaN or infinite"),
])
def test_decode_refuses_latents_it_would_decode_wrongly(broken_weights, tmp_path, capsys, video, audio, message):
    from ovi_core.cli import main as cli

    path = _latents(tmp_path / "x.ovi_latents.safetensors", video=video, audio=audio)
    rc = cli.main(["decode", path, "--weights", broken_weights, "--offline", "--out", str(tmp_path / "d.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "x.ovi_latents" in err and "Wan2.2_VAE" not in err, err


def test_gguf_shape_that_lies_is_named(tmp_path):
    """An orig_shape field whose element count differs from the stored tensor gave a raw reshape error at load."""
    import gguf

    from ovi_core.quant import ggml
    from ovi_core.quant.gguf_file import ARCH, ORIG_SHAPE_KEY, _byte_shape, read_gguf_index, stored_shape

    def write(path, claimed):
        """A valid F32 [64, 32] tensor, with ``claimed`` written as its original shape."""
        st = stored_shape((64, 32))
        w = gguf.GGUFWriter(path=None, arch=ARCH)
        w.add_array(ORIG_SHAPE_KEY + "blocks.0.ffn.0.weight", claimed)
        w.add_tensor_info("blocks.0.ffn.0.weight", _byte_shape(st, ggml.F32), np.dtype(np.uint8),
                          ggml.nbytes(st, ggml.F32), raw_dtype=ggml.F32)
        w.write_header_to_file(path=str(path))
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        raw = ggml.quantize(torch.zeros(st), ggml.F32)
        w.write_tensor_data(raw.numpy().reshape(_byte_shape(st, ggml.F32)))
        w.close()

    ok = tmp_path / "ok.gguf"
    write(ok, [64, 32])
    index, _ = read_gguf_index(ok)
    assert index["blocks.0.ffn.0.weight"].shape == (64, 32)
    bad = tmp_path / "lies.gguf"
    write(bad, [64, 33])
    with pytest.raises(ValueError, match=r"lies\.gguf.*blocks\.0\.ffn\.0\.weight.*claims shape \[64, 33\]"):
        read_gguf_index(bad)


def test_audio_louder_than_full_scale_is_clamped_where_written(tmp_path):
    """A guide louder than full scale was written unclamped into the MP4 while the log said it was clamped."""
    from ovi_core.conditioning.audio_in import prepare_audio

    loud = 2.0 * torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)[None]
    inp = prepare_audio(loud, 16000, version="1.1")
    assert float(inp.samples.abs().max()) <= 1.0
    assert float(inp.splice(torch.zeros(1, inp.canvas_samples)).abs().max()) <= 1.0
    mp4 = tmp_path / "loud.mp4"
    media.write_mp4(mp4, torch.zeros(24, 16, 16, 3), loud, fps=24)
    back, _ = media.read_audio(mp4)
    assert float(back.abs().max()) < 1.2  # AAC overshoots a clipped sine a little; unclamped it came back near 2


def test_unusable_audio_guides_are_refused_before_loading():
    from ovi_core.conditioning.audio_in import prepare_audio

    with pytest.raises(ValueError, match="covers no whole audio latent"):
        prepare_audio(torch.zeros(1, 1), 16000, version="1.1")  # one sample
    with pytest.raises(ValueError, match="NaN or infinite"):
        prepare_audio(torch.full((1, 16000), float("nan")), 16000, version="1.1")


def test_windows_dir_that_is_a_file(broken_weights, tmp_path, capsys):
    f = tmp_path / "win"
    f.write_text("x")
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", "--windows-dir", str(f))
    assert rc == 2 and "--windows-dir" in err and "is a file" in err
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", "--windows-dir", str(f / "sub"))
    assert rc == 2 and "cannot be created" in err


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf")])
def test_fp8_scale_must_be_finite_and_positive(value):
    """A scale of 0 zeroed a layer without a word; NaN/Inf poisoned the output."""
    from ovi_core.quant.fp8 import scale_value

    assert scale_value(torch.tensor([0.25]), name="blocks.0.ffn.0.scale_weight") == 0.25
    with pytest.raises(ValueError, match=r"blocks\.0\.ffn\.0\.scale_weight.*finite number above 0"):
        scale_value(torch.tensor([value]), name="blocks.0.ffn.0.scale_weight")


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


def _lora(path, down=None, alpha=4.0):
    from safetensors.torch import save_file

    k = "video_model.blocks.0.self_attn.q"
    save_file({f"{k}.lora_down.weight": torch.zeros(4, 24) if down is None else down,
               f"{k}.lora_up.weight": torch.zeros(24, 4), f"{k}.alpha": torch.tensor(alpha)}, str(path))
    return str(path)


def test_lora_values_are_checked_before_loading(broken_weights, tmp_path, capsys):
    """NaN/Inf LoRA tensors and absurd alphas were refused only after the DiT had loaded (or not at all)."""
    from ovi_core.lora.files import check_lora_file

    assert check_lora_file(_lora(tmp_path / "ok.safetensors")).linears  # the control: a sound LoRA passes
    for name, kw, message in (("nan", {"down": torch.full((4, 24), float("nan"))}, "NaN or infinite"),
                              ("alpha0", {"alpha": 0.0}, "alpha is a number above 0"),
                              ("huge", {"alpha": 1e9}, "alpha is a number above 0"),
                              ("alphanan", {"alpha": float("nan")}, "NaN or infinite")):
        bad = _lora(tmp_path / f"{name}.safetensors", **kw)
        rc, err = _run(broken_weights, tmp_path, capsys, "--lora", bad)
        assert rc == 2 and f"{name}.safetensors" in err and message in err, err


def test_long_clip_audio_longer_than_the_clip(broken_weights, tmp_path, capsys):
    """Refused only after the weights had loaded; now with the plan, before them."""
    wav = _wav(tmp_path / "long.wav", seconds=14.0)
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", "--audio", wav)
    assert rc == 2 and "the audio is 14.00 s but the clip is" in err


def test_long_clip_writer_clamps_its_track(tmp_path):
    from ovi_core.longclip.stream import ClipStreamWriter

    loud = 2.0 * torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)[None]
    with ClipStreamWriter(tmp_path / "l.mp4", wav_path=tmp_path / "l.wav") as w:
        w.write(torch.zeros(24, 16, 16, 3), loud)
    back, _ = media.read_audio(tmp_path / "l.mp4")
    assert float(back.abs().max()) < 1.2
    wav, _ = media.read_audio(tmp_path / "l.wav")
    assert float(wav.abs().max()) <= 1.0


@pytest.mark.usefixtures("one_thread")
def test_windows_dir_resumes_only_the_same_inputs(tmp_path):
    """Saved windows were reused after the image's content (or the LoRAs, fusion file, speed options) changed."""
    from ovi_core.longclip.job import generate_long_clip
    from ovi_core.pipeline import OviPipeline
    from ovi_core.tiny import write_tiny_weights

    root = str(tmp_path / "w")
    write_tiny_weights(root)
    pipe = OviPipeline.from_weights(root, device="cpu", download=False)
    store, out = str(tmp_path / "windows"), str(tmp_path / "o.mp4")
    sampled = []

    def run(image, **kw):
        sampled.clear()
        generate_long_clip(pipe, [PROMPT], seconds=8, out=out, steps=1, seed=5, windows_dir=store, image=image,
                           progress=lambda win, wins, step, steps: sampled.append(win), **kw)
        return sorted(set(sampled))

    dark, light = torch.zeros(64, 64, 3), torch.ones(64, 64, 3)
    assert run(dark) == [1, 2]
    assert run(dark) == []  # the same inputs: both windows come from the store
    assert run(light) == [1, 2]  # another picture: sampled again
    assert run(light, resume_key={"loras": [["x.safetensors", 0.8, "video"]]}) == [1, 2]  # another model
