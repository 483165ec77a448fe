"""Long clips take guides over any time range: a video or a sound track placed later in the clip
(``--video-offset`` / ``--audio-offset``); the windows it covers hold it, the rest is generated."""

import wave

import av
import pytest
import torch

from ovi_core.cli import main as cli
from ovi_core.io.media import write_mp4, write_wav
from ovi_core.longclip.plan import plan_windows
from ovi_core.longclip.runner import sample_windows, window_guides
from ovi_core.longclip.video_guide import FileVideo, TensorVideo, WindowVideo, held_frames
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import encode_prompts
from ovi_core.tiny import TINY_AREA

PROMPT = "A man in a red coat says <S>Hello.<E> <AUDCAP>Clear male voice.<ENDAUDCAP>"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip24(tmp_path_factory):
    """3 s at 24 fps (72 frames), 64x64, each frame a different flat grey."""
    path = tmp_path_factory.mktemp("media") / "clip24.mp4"
    levels = torch.linspace(0.1, 0.9, 72)
    write_mp4(str(path), levels.view(-1, 1, 1, 1).expand(72, 64, 64, 3).contiguous(), None, fps=24)
    return str(path)


def test_held_frames_start_at_the_first_latent_whose_previous_frame_is_given():
    assert held_frames(0, 145) == (0, 145)  # from 0 s: latent frame 0 on, as before
    assert held_frames(240, 300) == (241, 297)  # 10 s: the frame before latent 241-244 is frame 240, given
    assert held_frames(241, 300) == (245, 297)  # one frame later: latent 241-244 lacks frame 240, left out
    assert held_frames(1, 6) == (0, 0)  # frames 1-5 hold no latent with its previous frame


def test_a_video_placed_later_guides_the_latent_frames_it_covers_in_each_window():
    plan = plan_windows(12, version="1.0")  # windows at frames 0, 72, 144, 216
    frames = torch.rand(60, 64, 64, 3)
    wv = WindowVideo(TensorVideo(frames, 24, offset=100), plan, area=TINY_AREA)  # clip frames 100-159
    assert wv.held == (101, 157) and wv.frames == 60
    assert [wv.span(k) for k in range(4)] == [(26, 31), (8, 22), (0, 4), (0, 0)]
    inp = wv.window_input(1)  # from frame 100 (the one before latent 8 = frames 101-104) to 156
    assert torch.equal(inp.frames, frames[0:57]) and inp.covered == 15
    assert torch.equal(wv.window_input(2).frames, frames[44:57])  # window 2 from its frame 0 (clip frame 144)
    assert wv.window_input(3) is None
    out = torch.zeros(50, 64, 64, 3)
    spliced = wv.splice(90, out)  # output frames 90-139: the given ones from 101 on
    assert torch.equal(spliced[:11], out[:11]) and not torch.equal(spliced[11:], out[11:])
    with pytest.raises(ValueError, match="past the clip's end"):
        WindowVideo(TensorVideo(frames, 24, offset=289), plan, area=TINY_AREA)
    with pytest.raises(ValueError, match="offset"):
        TensorVideo(frames, 24, offset=-1)


def test_window_guides_place_the_video_at_its_latent_frame_and_mask_the_track():
    plan = plan_windows(12, version="1.0")
    shape = (1, 48, plan.window_latents, 4, 4)
    given = torch.randn(1, 48, 5, 4, 4)
    (g,) = window_guides(plan, 0, None, video_shape=shape, given_video=given, given_video_at=26)
    assert g.mask.tolist() == [False] * 26 + [True] * 5 and torch.equal(g.latent[:, :, 26:], given)
    track = torch.randn(1, 300, 20)
    mask = torch.arange(300) >= 120
    (a,) = window_guides(plan, 0, None, video_shape=shape, given_audio=track, given_audio_mask=mask)
    assert a.mask.tolist() == [False] * 120 + [True] * 37
    assert torch.equal(a.latent[:, 120:], track[:, 120:157]) and not a.latent[:, :120].any()


def test_every_window_holds_the_video_where_it_is_placed(pipe):
    plan = plan_windows(6, version="1.0")  # windows at frames 0 and 72
    frames = torch.rand(60, 64, 64, 3)
    wv = WindowVideo(TensorVideo(frames, 24, offset=40), plan, area=TINY_AREA)  # clip frames 40-99
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    given = {}

    def encode(k):
        given[k] = wv.window_latent(k, pipe.video_vae)
        return given[k]

    wins = list(sample_windows(pipe.model, [cond] * 2, plan, height=64, width=64, given_video=encode,
                               settings=SamplingSettings(steps=2, seed=3)))
    assert [wv.span(k) for k in (0, 1)] == [(11, 25), (0, 7)]
    for k, (lat, j0) in given.items():
        j1 = j0 + lat.shape[2]
        assert torch.equal(wins[k].video[:, :, j0:j1], lat)
        if j0:  # before the video: generated, not the given latents
            assert not torch.equal(wins[k].video[:, :, j0 - 1], lat[:, :, 0])


def _frames(path):
    with av.open(str(path)) as c:
        return [torch.from_numpy(f.to_ndarray(format="rgb24")).float() for f in c.decode(video=0)]


def _run(weights, out, *extra):
    return cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                     "--device", "cpu", "--out", str(out), *extra])


def test_generate_places_a_video_later_in_a_long_clip(weights, clip24, tmp_path):
    out = tmp_path / "v.mp4"
    assert _run(weights, out, "--video", clip24, "--video-offset", "3", "--seconds", "8") == 0
    got = _frames(out)
    assert len(got) == 193
    src = FileVideo(clip24)
    for k in (73, 100, 140):  # clip frame k shows video frame k - 72 (H.264 twice: a few levels off)
        assert (got[k] - src.frames(k - 72, k - 71)[0].float()).abs().mean() < 4, k
    for k in (10, 60):  # before 3 s the frames are generated, not the video's first frame
        assert (got[k] - src.frames(0, 1)[0].float()).abs().mean() > 4, k
    # without --seconds the clip ends with the video: 1 s + 3 s = 97 frames, one window (a long clip of one)
    assert _run(weights, tmp_path / "s.mp4", "--video", clip24, "--video-offset", "1") == 0
    got = _frames(tmp_path / "s.mp4")
    assert len(got) == 121  # the model's window: at least 5 s
    assert (got[60] - src.frames(36, 37)[0].float()).abs().mean() < 4


def test_generate_places_a_sound_track_later_in_a_long_clip(weights, tmp_path):
    wav = tmp_path / "voice.wav"
    t = torch.arange(3 * 16000) / 16000
    tone = 0.3 * torch.sin(2 * torch.pi * 330 * t)
    write_wav(str(wav), tone[None], sample_rate=16000)
    out = tmp_path / "a.mp4"
    assert _run(weights, out, "--audio", str(wav), "--audio-offset", "4", "--seconds", "8", "--wav") == 0
    with wave.open(str(tmp_path / "a.wav"), "rb") as f:
        pcm = torch.frombuffer(bytearray(f.readframes(f.getnframes())), dtype=torch.int16).float() / 32767
    assert pcm.shape[0] == round(193 * 16000 / 24)
    assert (pcm[64000:112000] - tone).abs().max() < 2e-4  # the given track, sample for sample, from 4 s
    assert (pcm[:64000] - 0).abs().max() > 0  # before it: generated
    assert not torch.allclose(pcm[16000:64000], tone[:48000], atol=1e-2)
    # without --seconds the clip ends with the track (4 s + 3 s), a long clip of two windows
    assert _run(weights, tmp_path / "b.mp4", "--audio", str(wav), "--audio-offset", "4") == 0
    assert len(_frames(tmp_path / "b.mp4")) == 169  # floor(7 * 24) + 1


@pytest.mark.parametrize(("argv", "msg"), [
    (["--video-offset", "1"], "--video-offset needs --video"),
    (["--audio", "A", "--audio-offset", "9", "--seconds", "8"], "must lie inside the clip"),
])
def test_bad_offsets_fail_before_loading(weights, tmp_path, argv, msg, capsys):
    wav = tmp_path / "v.wav"
    write_wav(str(wav), torch.zeros(1, 16000), sample_rate=16000)
    argv = [str(wav) if a == "A" else a for a in argv]
    assert _run(weights, tmp_path / "x.mp4", *argv) != 0
    assert msg in capsys.readouterr().err
