"""Face and voice references from files: preparation (aspect fit, seconds 1-2), the CLI flags, an end-to-end run on
tiny weights, and errors before the weights load."""

import os

import av
import pytest
import torch

from ovi_core.cli import main as cli
from ovi_core.conditioning.reference_in import fit_face, prepare_references, voice_samples
from ovi_core.io.media import read_audio, read_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
FACE = os.path.join(DATA, "ovi_example_89.png")  # 248 x 128
VOICE = os.path.join(DATA, "ovi_example_voice.wav")  # 3 s, 16 kHz
PROMPT = "<img1>: a man in a red coat, identified as <sub1>. He says <S>Hello.<E>"


def test_fit_face_layout():
    # a 4:1 image into 64x32 (2:1): fills the width, int(64 / 4) = 16 rows, centred, white above and below
    img = torch.zeros(10, 40, 3, dtype=torch.uint8)
    x = fit_face(img, 32, 64)
    assert x.shape == (1, 3, 1, 32, 64)
    assert torch.equal(x[0, :, 0, :8], torch.ones(3, 8, 64)) and torch.equal(x[0, :, 0, 24:], torch.ones(3, 8, 64))
    assert torch.equal(x[0, :, 0, 8:24], -torch.ones(3, 16, 64))
    # a tall image fills the height: new_w = int(32 * 0.5) = 16, left pad (64 - 16) // 2 = 24
    x = fit_face(torch.zeros(20, 10, 3), 32, 64)
    assert x[0, 0, 0, :, :24].eq(1).all() and x[0, 0, 0, :, 24:40].eq(-1).all() and x[0, 0, 0, :, 40:].eq(1).all()


def test_voice_is_seconds_one_to_two():
    w = torch.arange(48000, dtype=torch.float32)[None] / 48000
    got = voice_samples(w, 16000)
    assert torch.equal(got, w[0, 16000:32000])
    with pytest.raises(ValueError, match="at least 2 s"):
        voice_samples(w[:, :30000], 16000)


def test_prepare_and_encode_on_tiny_codecs(weights):
    from ovi_core.audio.codec import load_audio_codec
    from ovi_core.io.weights import resolve_weights
    from ovi_core.vae.wan_vae import load_wan_vae

    p = resolve_weights(weights, download=False)
    img, (wav, sr) = read_image(FACE), read_audio(VOICE)
    inp = prepare_references([img, img], [(wav, sr), (wav, sr)], height=64, width=64, audio_ref_scale=0.5)
    refs = inp.encode(load_wan_vae(p.wan_vae), load_audio_codec(p.mmaudio_vae, p.bigvgan))
    assert [f.shape for f in refs.faces] == [(1, 48, 1, 4, 4)] * 2
    assert [v.shape for v in refs.voices] == [(1, 31, 20)] * 2  # 16000 samples -> 31 latents
    assert refs.audio_ref_scale == 0.5 and refs.layout.audio_lengths == (31, 31)
    with pytest.raises(ValueError, match="in pairs"):
        prepare_references([img, img], [(wav, sr)], height=64, width=64)


def _duration(path) -> tuple[int, float]:
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))
    return n, 0.0


def test_cli_reference_run_end_to_end(weights, tmp_path, caplog):
    out = tmp_path / "ref.mp4"
    rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                   "--ref-image", FACE, "--ref-audio", VOICE, "--out", str(out)])
    assert rc == 0 and out.is_file()
    n, _ = _duration(out)
    assert n == 121  # the clip only, no reference frame
    assert "experimental" in caplog.text  # tiny Ovi weights, not a DreamID-Omni file


@pytest.mark.parametrize("extra, message", [
    (["--ref-image", FACE], "one --ref-image and one --ref-audio per person"),
    (["--ref-image", FACE, "--ref-audio", VOICE] * 3, "1 or 2 people"),
    (["--ref-image", FACE, "--ref-audio", VOICE, "--image", FACE], "do not combine with --image"),
    (["--ref-image", FACE, "--ref-audio", VOICE, "--seconds", "20"], "one window"),
    (["--ref-image", FACE, "--ref-audio", "missing.wav"], "missing.wav"),
])
def test_cli_errors_before_weights_load(broken_weights, tmp_path, capsys, extra, message):
    rc = cli.main(["generate", "--weights", broken_weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                   "--out", str(tmp_path / "o.mp4"), *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Wan2.2_VAE" not in err


def test_cli_short_voice_is_refused(broken_weights, tmp_path, capsys):
    from ovi_core.io.media import write_wav

    short = tmp_path / "short.wav"
    write_wav(short, torch.zeros(1, 20000), sample_rate=16000)
    rc = cli.main(["generate", "--weights", broken_weights, "--prompt", PROMPT, "--offline", "--ref-image", FACE,
                   "--ref-audio", str(short), "--out", str(tmp_path / "o.mp4")])
    assert rc == 2 and "at least 2 s" in capsys.readouterr().err


def test_reference_defaults_are_dreamid_s():
    from ovi_core.cli import references as references_cli

    parser = cli.build_parser()
    args = parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4", "--ref-image", "a",
                              "--ref-audio", "b", "--audio-cfg", "5"])
    references_cli.apply_defaults(args)
    assert (args.video_cfg, args.audio_cfg) == (3.0, 5.0)  # a given flag keeps its value
    assert args.negative_video == "jitter, bad hands, blur, distortion"
    assert (args.ref_video_cfg, args.ref_audio_cfg) == (1.5, 2.0)
    plain = parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4"])
    references_cli.apply_defaults(plain)
    assert (plain.video_cfg, plain.audio_cfg) == (4.0, 3.0)  # Ovi's defaults without references
