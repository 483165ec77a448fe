"""``validate.check_plan``, the one entry point of the weight-free checks: every CLI command refuses bad input
through it before any weights load. The heavy loaders are counted for real (tests/load_spy.py): a refusal must
come with zero loads, and the controls (valid input) show that the counter sees the loads that do happen."""

import struct

import load_spy
import numpy as np
import pytest
import torch

PROMPT = "A man in a red coat says <S>Hello.<E> Audio: clear male voice."


@pytest.fixture(scope="module")
def weights(broken_weights):
    """Tiny weights whose video VAE is garbage: a run that gets as far as loading fails there (after a load)."""
    return broken_weights


@pytest.fixture
def loads(monkeypatch):
    return load_spy.install(monkeypatch)


def _main(*argv):
    from ovi_core.cli import main as cli

    try:
        return cli.main(list(argv))
    except SystemExit as e:  # argparse refusals
        return e.code


def _generate(weights, tmp_path, *extra):
    return _main("generate", "--weights", weights, "--steps", "1", "--offline", "--out", str(tmp_path / "o.mp4"),
                 "--prompt", PROMPT, *extra)


def _float_wav(path, samples: np.ndarray, rate=16000):
    """A mono 32-bit float WAV (format 3), which can hold NaN."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    return str(path)


def _lora(path, width, *, up=0.0, alpha=4.0):
    from safetensors.torch import save_file

    k = "video_model.blocks.0.self_attn.q"
    save_file({f"{k}.lora_down.weight": torch.zeros(4, width), f"{k}.lora_up.weight": torch.full((width, 4), up),
               f"{k}.alpha": torch.tensor(alpha)}, str(path))
    return str(path)


def _width(weights):
    from ovi_core.io import checkpoints as ck
    from ovi_core.io.weights import resolve_weights

    return int(ck.peek(resolve_weights(weights, download=False).fusion)["video_model.blocks.0.self_attn.q.weight"]
               .shape[1])


def _latents(path, *, fill=0.0):
    from safetensors.torch import save_file

    save_file({"video": torch.full((1, 48, 31, 4, 4), fill), "audio": torch.zeros(1, 157, 20)}, str(path),
              metadata={"ovi.version": "1.1", "ovi.fps": "24"})
    return str(path)


def test_the_counter_sees_real_loads(weights, tmp_path, loads, capsys):
    """The control: valid input gets as far as loading (and fails on the garbage VAE), and the counter saw it."""
    rc = _generate(weights, tmp_path, "--lora", _lora(tmp_path / "ok.safetensors", _width(weights)))
    assert rc != 0 and "Wan2.2_VAE" in capsys.readouterr().err
    assert sum(loads.values()) > 0, loads


def test_generate_refusals_load_nothing(weights, tmp_path, loads, capsys):
    w = _width(weights)
    good = _float_wav(tmp_path / "good.wav", 0.3 * np.sin(np.arange(16000) / 10))
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"A man talks.\x00\n")
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    cases = {
        "lora NaN tensors": (["--lora", _lora(tmp_path / "nan.safetensors", w, up=float("nan"))], "NaN or infinite"),
        "lora absurd alpha": (["--lora", _lora(tmp_path / "alpha.safetensors", w, alpha=1e9)], "alpha"),
        "lora other width": (["--lora", _lora(tmp_path / "wide.safetensors", w + 8)], "does not fit"),
        "lora NaN strength": (["--lora", _lora(tmp_path / "s.safetensors", w) + ":nan"], "finite"),
        "NaN audio": (["--audio", _float_wav(tmp_path / "nan.wav", np.full(8000, np.nan))], "NaN or infinite"),
        "one-sample audio": (["--audio", _float_wav(tmp_path / "one.wav", np.zeros(1))], "covers no whole"),
        "NaN source latents": (["--source", _latents(tmp_path / "n.safetensors", fill=float("nan")), "--redo",
                                "audio:1-2"], "NaN"),
        "windows dir is a file": (["--seconds", "12", "--windows-dir", str(tmp_path / "nan.wav")], "is a file"),
        "guide-until without guide": (["--guide-until", "0.5"], "applies to a guide"),
        "NaN shift": (["--shift", "nan"], "shift"),
        "bad size": (["--size", "1x100000"], "size"),
        # found walking the catalogue again (each gave a raw message, or loaded the weights first)
        "NaN --audio-offset": (["--audio", good, "--audio-offset", "nan"], "--audio-offset must be a finite number"),
        "control character in a prompt file": (["--prompt", str(nul), "--seconds", "12"], "control character 0x00"),
        "negative --blocks-on-gpu": (["--blocks-on-gpu", "-1"], "--blocks-on-gpu must be 0 or more"),
        "GGUF given as a LoRA": (["--lora", str(gguf)], "is a GGUF file"),
        "sound given as the fusion model": (["--fusion", good], "is a RIFF (WAV/AVI) media file"),
    }
    for label, (extra, message) in cases.items():
        rc = _generate(weights, tmp_path, *extra)
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (label, err)
        assert sum(loads.values()) == 0, (label, dict(loads))


def test_decode_refusals_load_nothing(weights, tmp_path, loads, capsys):
    nan = _latents(tmp_path / "x.ovi_latents.safetensors", fill=float("nan"))
    rc = _main("decode", nan, "--weights", weights, "--offline", "--out", str(tmp_path / "d.mp4"))
    assert rc == 2 and "x.ovi_latents" in capsys.readouterr().err
    good = _latents(tmp_path / "g.ovi_latents.safetensors")
    (tmp_path / "file").write_text("x")
    rc = _main("decode", good, "--weights", weights, "--offline", "--out", str(tmp_path / "file" / "d.mp4"))
    assert rc == 2 and "is a file" in capsys.readouterr().err
    assert sum(loads.values()) == 0, dict(loads)
    rc = _main("decode", good, "--weights", weights, "--offline", "--out", str(tmp_path / "d.mp4"))  # control
    assert rc != 0 and loads["ovi_core.vae.wan_vae.load_wan_vae"] == 1, dict(loads)


def test_quantize_checks_the_output_before_reading_the_input(weights, tmp_path, loads, capsys):
    """An output in a 'folder' that is a file was found only after the whole input had been read and converted."""
    from ovi_core.io.weights import resolve_weights

    src = resolve_weights(weights, download=False).fusion
    (tmp_path / "file").write_text("x")
    rc = _main("quantize", src, str(tmp_path / "file" / "q.gguf"), "--format", "q8_0")
    err = capsys.readouterr().err
    assert rc == 2 and "is a file" in err and "q.gguf" in err, err
    rc = _main("quantize", src, str(tmp_path / "q.safetensors"), "--format", "q8_0")
    assert rc == 2 and ".gguf" in capsys.readouterr().err
    assert sum(loads.values()) == 0, dict(loads)
    assert _main("quantize", src, str(tmp_path / "q.gguf"), "--format", "q8_0") == 0  # control
    assert loads["ovi_core.quant.convert.quantize_file"] == 1


def test_check_plan_reads_each_part_once(weights, tmp_path):
    """The entry point returns what it read: first frames (uint8, capped), latents, LoRA key maps, fusion files."""
    from ovi_core import validate
    from ovi_core.io.weights import resolve_weights

    fusion = resolve_weights(weights, download=False).fusion
    img = tmp_path / "f.png"
    import av

    with av.open(str(img), "w") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 64, 32, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 64, 3), np.uint8), format="rgb24")
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    checked = validate.check_plan(validate.Plan(
        images=[str(img)], area=16 * 16, latents=_latents(tmp_path / "l.safetensors"), fusion=[fusion],
        loras=[validate.LoraRequest(_lora(tmp_path / "k.safetensors", _width(weights)))]))
    assert checked.images[str(img)].dtype == torch.uint8 and checked.images[str(img)].shape[0] * \
        checked.images[str(img)].shape[1] <= 4 * 16 * 16
    assert checked.latents.video.shape == (1, 48, 31, 4, 4) and checked.fusion == fusion
    assert len(checked.lora_maps) == 1
    with pytest.raises(ValueError, match="LoRA x.safetensors: the strength must be a finite number"):
        validate.check_plan(validate.Plan(loras=[validate.LoraRequest(str(tmp_path / "x.safetensors"),
                                                                      float("inf"), what="LoRA")]))


def test_long_clip_track_with_nan_is_refused_before_loading(weights, tmp_path, loads, capsys):
    """A NaN-filled --audio track of a long clip passed every check and failed only after the weights loaded."""
    rc = _generate(weights, tmp_path, "--seconds", "12", "--audio", _float_wav(tmp_path / "n.wav", np.full(16000, np.nan)))
    err = capsys.readouterr().err
    assert rc == 2 and "NaN or infinite" in err, err
    assert sum(loads.values()) == 0, dict(loads)


def test_fp8_scale_of_zero_or_nan_is_refused_before_loading(weights, tmp_path, loads, capsys):
    """An fp8_scaled --fusion file whose scale_weight is 0 or NaN was refused only as the DiT loaded (after the
    other components); its scales are a few bytes of the header's tensors, read now."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ovi_core.io.weights import resolve_weights
    from ovi_core.quant.convert import quantize_file

    src = str(tmp_path / "s.safetensors")
    quantize_file(resolve_weights(weights, download=False).fusion, src, format="fp8_scaled")
    with safe_open(src, "pt") as f:
        sd, meta = {n: f.get_tensor(n) for n in f.keys()}, f.metadata()  # noqa: SIM118 (safe_open has no iter)
    key = sorted(n for n in sd if n.endswith("scale_weight"))[0]
    for label, value in (("zero", 0.0), ("nan", float("nan"))):
        bad = str(tmp_path / f"{label}.safetensors")
        save_file({**sd, key: torch.full_like(sd[key], value)}, bad, metadata=meta)
        rc = _generate(weights, tmp_path, "--fusion", bad)
        err = capsys.readouterr().err
        assert rc == 2 and f"{label}.safetensors" in err and key in err and "finite number above 0" in err, err
    assert sum(loads.values()) == 1, dict(loads)  # the quantize above, nothing after it
