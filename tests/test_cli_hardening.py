"""Hostile and careless input on the command line and the pipeline: checked before the weights load, no lost
results when the output cannot be written, no temporary files after SIGTERM, no abbreviated flags, huge images
shrunk while 8-bit, prompt warnings returned, and the video decode tiled only when memory requires it."""

import errno
import os
import re
import signal
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from ovi_core.cli import main as cli
from ovi_core.io import media
from ovi_core.io.latents import LATENT_SUFFIX, OutputWriteError, load_latents
from ovi_core.pipeline import OviPipeline, decode_video
from ovi_core.text.conditioning import encode_prompts
from ovi_core.tiny import write_tiny_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
PROMPT = "A man in a red coat says <S>Hello from Ovi.<E> Audio: clear male voice, city ambience."


def _write_png(path, arr: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = arr.shape[1], arr.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _gen(weights, out, *extra):
    return cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                     "--out", str(out), *extra])


# ---------------------------------------------------------------------------------------------- argparse


def test_no_parser_accepts_abbreviations():
    parser = cli.build_parser()
    parsers = list(cli.iter_parsers(parser))
    assert len(parsers) >= 6 and all(p.allow_abbrev is False for p in parsers)
    ok = parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4", "--audio-cfg", "3"])
    assert ok.audio_cfg == 3.0
    with pytest.raises(SystemExit) as e:  # an abbreviation of --audio-cfg was silently accepted
        parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4", "--audio-c", "3"])
    assert e.value.code == 2
    # --audio is a flag of its own now (a given sound file), never read as --audio-cfg
    both = parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4", "--audio", "3"])
    assert both.audio == "3" and both.audio_cfg == 3.0
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--weigh", "w", "--prompt", "p", "--out", "o.mp4"])


def test_training_entry_point_refuses_abbreviations(capsys):
    from ovi_core.training.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["prepare-dataset", "clips", "out", "--weights", "w", "--audio", "3"])  # --audio-tokens
    assert e.value.code == 2
    assert "unrecognized arguments: --audio 3" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- before loading


def test_valid_arguments_reach_the_broken_weights(broken_weights, tmp_path, capsys):
    """The control: with good arguments the run gets as far as loading, and fails on the garbage VAE."""
    assert _gen(broken_weights, tmp_path / "o.mp4") == 2
    assert "Wan2.2_VAE.pth" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--size", "1x100000"], "max side"),
    (["--size", "0x64"], "positive"),
    (["--seed", str(2**70)], r"2\*\*64 - 1"),
    (["--seed", "-5"], "seed"),
    (["--steps", "0"], "steps"),
    (["--shift", "0"], "shift"),
    (["--shift", "nan"], "shift"),
    (["--slg-layer", "-7"], "slg_layer"),
    (["--video-cfg", "inf"], "video_guidance_scale"),
    (["--model-version", "1.0", "--seconds", "10"], "5 s clips only"),
    (["--model-version", "2.0"], "Unknown model version"),
])
def test_bad_arguments_fail_before_the_weights_load(broken_weights, tmp_path, capsys, extra, message):
    out = tmp_path / "o.mp4"
    assert _gen(broken_weights, out, *extra) == 2
    err = capsys.readouterr().err
    assert "Wan2.2_VAE" not in err
    assert re.search(message, err), err
    assert not out.exists()


def test_bad_files_fail_before_the_weights_load(broken_weights, tmp_path, capsys):
    base = ["generate", "--weights", broken_weights, "--steps", "1", "--offline"]
    assert cli.main([*base, "--prompt", " ", "--out", str(tmp_path / "a.mp4")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    # the output is a folder / under a file / not writable
    assert cli.main([*base, "--prompt", PROMPT, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert cli.main([*base, "--prompt", PROMPT, "--out", str(tmp_path / "f" / "a.mp4")]) == 2
    assert "not a folder" in capsys.readouterr().err
    # an image that does not decode
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert cli.main([*base, "--prompt", PROMPT, "--image", str(bad), "--out", str(tmp_path / "b.mp4")]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "Wan2.2_VAE" not in err


def test_missing_prompt_file_is_an_error_not_a_prompt(broken_weights, tmp_path, capsys):
    assert cli.main(["generate", "--weights", broken_weights, "--prompt", str(tmp_path / "missing.csv"),
                     "--out", str(tmp_path / "o.mp4")]) == 2
    assert "Prompt file not found" in capsys.readouterr().err


def test_bad_utf8_csv_names_its_file(broken_weights, tmp_path, capsys):
    csv = tmp_path / "latin1.csv"
    csv.write_bytes("text_prompt\nA caf\u00e9 <S>hi<E>\n".encode("latin-1"))
    assert cli.main(["generate", "--weights", broken_weights, "--prompt", str(csv), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "latin1.csv" in err and "UTF-8" in err


# ---------------------------------------------------------------------------------------------- no lost work


@pytest.fixture(scope="module")
def weights_10s(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("w10s"))
    write_tiny_weights(root, version="1.1-10s")
    return root


def test_failed_write_keeps_the_latents_and_decode_restores_the_clip(weights_10s, tmp_path):
    pipe = OviPipeline.from_weights(weights_10s, device="cpu", download=False)
    res = pipe.generate(PROMPT, steps=1, seed=4, seconds=5)
    # a 5 s clip from the 10 s model: made, and the warning is in the result (not only in the log)
    assert res.frames.shape[0] == 121 and res.latents.video.shape[2] == 31
    assert any("5 s with the 10 s model" in w for w in res.warnings)
    clash = tmp_path / "clip.mp4"
    clash.mkdir()  # the output name is taken by a folder when the result is written
    with pytest.raises(OutputWriteError) as e:
        pipe.save(res, str(clash), weights=weights_10s)
    kept = e.value.latents_path
    assert kept == str(tmp_path / ("clip" + LATENT_SUFFIX)) and os.path.isfile(kept)
    assert "python -m ovi_core decode" in str(e.value) and kept in str(e.value)
    lat = load_latents(kept)
    assert torch.equal(lat.video, res.latents.video) and torch.equal(lat.audio, res.latents.audio)
    assert torch.equal(decode_video(pipe.video_vae, lat.video), res.frames)  # the same frames, exactly
    assert [f for f in os.listdir(tmp_path) if ".part" in f] == []


def test_cli_write_failure_keeps_the_work(weights, tmp_path, monkeypatch, capsys, caplog):
    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media, "write_mp4", disk_full)  # the disk fills up while the MP4 is written
    out = tmp_path / "o.mp4"
    assert _gen(weights, out) == 1
    kept = tmp_path / ("o" + LATENT_SUFFIX)
    assert kept.is_file() and not out.exists()
    assert "could not be written" in capsys.readouterr().err
    assert f"python -m ovi_core decode {kept}" in caplog.text
    monkeypatch.undo()  # the disk has room again: the printed command makes the clip
    assert cli.main(["decode", str(kept), "--weights", weights, "--device", "cpu", "--offline", "--out", str(out)]) == 0
    assert _frames(out).shape == (121, 64, 64, 3)


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    script = (
        "import sys, torch\n"
        "from ovi_core.io.media import write_mp4\n"
        "def frames():\n"
        "    yield torch.zeros(32, 32, 3)\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.readline()\n"  # blocks mid-write until the parent has signalled
        "    yield torch.zeros(32, 32, 3)\n"
        "write_mp4(sys.argv[1], frames(), None)\n"
    )
    out = tmp_path / "o.mp4"
    env = {**os.environ, "PYTHONPATH": ROOT}
    for sig, codes in ((signal.SIGTERM, (128 + 15,)), (signal.SIGINT, (1, -signal.SIGINT, 130))):
        p = subprocess.Popen([sys.executable, "-c", script, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
        try:
            assert p.stdout.readline().strip() == "writing"
            assert any(".part" in f for f in os.listdir(tmp_path))  # really mid-write
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode in codes, err
        assert os.listdir(tmp_path) == [], (sig, os.listdir(tmp_path))
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)  # this process's handler untouched


# ---------------------------------------------------------------------------------------------- images


def test_huge_image_is_shrunk_while_8bit(tmp_path):
    g = np.random.default_rng(0)
    big = g.integers(0, 256, size=(600, 900, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    _write_png(path, big)
    full = media.read_image(path)
    assert full.dtype == torch.uint8 and torch.equal(full, torch.from_numpy(big))  # lossless when small enough
    assert torch.equal(media.read_image(path, max_pixels=600 * 900), full)
    small = media.read_image(path, max_pixels=60 * 90)
    assert small.dtype == torch.uint8 and small.shape[0] * small.shape[1] <= 60 * 90
    assert abs(small.shape[1] / small.shape[0] - 1.5) < 0.05  # aspect kept
    # an area filter: each output pixel is close to the mean of its 10 x 10 block
    ref = big.reshape(60, 10, 90, 10, 3).mean(axis=(1, 3))
    if small.shape[:2] == (60, 90):
        assert np.abs(small.numpy().astype(float) - ref).mean() < 8


def test_cli_image_is_capped_by_the_model_area(tmp_path):
    from ovi_core.cli.common import load_image

    path = tmp_path / "big.png"
    _write_png(path, np.full((640, 960, 3), 128, dtype=np.uint8))
    img = load_image(str(path), area=64 * 64)
    assert img.dtype == torch.uint8 and img.shape[0] * img.shape[1] <= 4 * 64 * 64


# ---------------------------------------------------------------------------------------------- warnings


def test_truncation_and_mixed_captions_reach_the_warnings(pipe):
    long = PROMPT + " and" * 600
    cond = encode_prompts(pipe.text_encoder, long, version="1.0")
    assert any("cut after 511 tokens" in w for w in cond.warnings)
    assert not any("cut after" in w for w in encode_prompts(pipe.text_encoder, PROMPT, version="1.0").warnings)
    mixed = "A man says <S>hi<E> <AUDCAP>a voice<ENDAUDCAP> Audio: a voice"
    for version in ("1.0", "1.1"):
        assert any("both an <AUDCAP>" in w for w in encode_prompts(pipe.text_encoder, mixed, version=version).warnings)


# ---------------------------------------------------------------------------------------------- decode tiling


@pytest.fixture(scope="module")
def golden_vae():
    from ovi_core.vae.wan_vae import load_wan_vae

    return load_wan_vae(os.path.join(DATA, "wan_vae.weights.safetensors"))


def _reference_decode(vae, z):
    """The whole-frame decode written out from the decoder's own stages, without any tiling code."""
    from ovi_core.vae.wan_layers import unpatchify

    mean, inv_std = vae._scale(z)
    x = vae.conv2(z / inv_std + mean)
    cache, outs = {}, []
    for i in range(x.shape[2]):
        outs.append(unpatchify(vae.decoder(x[:, :, i : i + 1], cache, i == 0)))
    return torch.cat(outs, dim=2).clamp(-1, 1)


def test_untiled_decode_above_48x48_equals_the_full_reference(golden_vae):
    torch.manual_seed(0)
    z = torch.randn(1, 48, 1, 49, 49)  # tiled by default before (above 48 x 48 latents)
    ref = _reference_decode(golden_vae, z)
    frames, plan = decode_video(golden_vae, z, return_plan=True)
    assert not plan.tiled and plan.message() == ""
    assert torch.equal(frames, ((ref[0] + 1) / 2).permute(1, 2, 3, 0))


def test_decode_video_reports_a_tiled_decode(golden_vae):
    torch.manual_seed(1)
    z = torch.randn(1, 48, 1, 12, 12)
    full, plan = decode_video(golden_vae, z, return_plan=True)
    budget = golden_vae.plan_decode(z.shape, memory_budget=10**15).estimated_bytes - 1  # just too little
    tiled, tplan = decode_video(golden_vae, z, memory_budget=budget, return_plan=True)
    assert not plan.tiled and tplan.tiled and "tiles" in tplan.message()
    assert not torch.equal(tiled, full) and (tiled - full).abs().max() < 0.2
    forced, fplan = decode_video(golden_vae, z, tile_latent=8, return_plan=True)
    assert fplan.tiled and fplan.requested and "as requested" in fplan.message()
