"""Hostile files and flags, round 2: raw exceptions on the command line turned into messages that name the file
or flag (before any weights load), and inputs that were silently used wrongly (see also test_hardening2.py)."""

import os
import wave

import numpy as np
import pytest
import torch

from ovi_core.io import media


def _wav(path, channels=1, rate=16000, seconds=0.25, hz=440.0, amp=0.5):
    n = int(rate * seconds)
    x = np.repeat((amp * np.sin(2 * np.pi * hz * np.arange(n) / rate))[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((x * 32767).astype("<i2").tobytes())
    return str(path)


# --- 3. raw exceptions -> messages naming the file or flag, before the weights load --------------------------------

PROMPT = "A man in a red coat says <S>Hello.<E> Audio: clear male voice."


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


def test_long_clip_audio_too_short_for_the_clip(broken_weights, tmp_path, capsys):
    """Refused only after the weights had loaded; now with the plan, before them. (A track longer than an explicit
    --seconds is cut there with a note: the given media sets the length unless --seconds says otherwise.)"""
    wav = _wav(tmp_path / "short.wav", seconds=0.05)
    rc, err = _run(broken_weights, tmp_path, capsys, "--seconds", "12", "--audio", wav)
    assert rc == 2 and "the audio is too short to encode" in err


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
    from ovi_core.sampling.settings import SamplingSettings
    from ovi_core.tiny import write_tiny_weights

    root = str(tmp_path / "w")
    write_tiny_weights(root)
    pipe = OviPipeline.from_weights(root, device="cpu", download=False)
    store, out = str(tmp_path / "windows"), str(tmp_path / "o.mp4")
    sampled = []

    def run(image, **kw):
        sampled.clear()
        settings = SamplingSettings(steps=1, seed=5, speed=kw.pop("speed", None))
        generate_long_clip(pipe, [PROMPT], seconds=8, out=out, settings=settings, windows_dir=store, image=image,
                           progress=lambda win, wins, step, steps: sampled.append(win), **kw)
        return sorted(set(sampled))

    dark, light = torch.zeros(64, 64, 3), torch.ones(64, 64, 3)
    assert run(dark) == [1, 2]
    assert run(dark) == []  # the same inputs: both windows come from the store
    assert run(light) == [1, 2]  # another picture: sampled again
    assert run(light, resume_key={"loras": [["x.safetensors", 0.8, "video"]]}) == [1, 2]  # another model
