"""A given video guides every long-clip window; ``generate --video/--audio`` without ``--seconds`` follows the media."""

import logging
import os

import av
import pytest
import torch

from ovi_core.cli import main as cli
from ovi_core.conditioning.video_in import read_video_file, to_24fps
from ovi_core.io.media import write_mp4, write_wav
from ovi_core.longclip.plan import plan_windows
from ovi_core.longclip.runner import sample_windows, window_guides
from ovi_core.longclip.video_guide import FileVideo, TensorVideo, WindowVideo
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import encode_prompts
from ovi_core.tiny import TINY_AREA

PROMPT = "A man in a red coat says <S>Hello.<E> <AUDCAP>Clear male voice.<ENDAUDCAP>"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    """6 s at 30 fps (180 frames = 144 at 24 fps), 64x64, each frame a different flat grey."""
    path = tmp_path_factory.mktemp("media") / "clip30.mp4"
    levels = torch.linspace(0.05, 0.95, 180)
    frames = levels.view(-1, 1, 1, 1).expand(180, 64, 64, 3).contiguous()
    write_mp4(str(path), frames, None, fps=30)
    return str(path)


def test_file_video_reads_ranges_as_the_whole_file_reader(clip30):
    src = FileVideo(clip30)
    assert (src.frames24, src.height, src.width) == (144, 64, 64)
    frames, fps = read_video_file(clip30)
    whole = to_24fps(frames, fps)
    assert whole.shape[0] == 144
    for a, b in ((0, 5), (40, 121), (96, 144), (140, 200)):
        assert torch.equal(src.frames(a, b), whole[a:min(b, 144)])
    tv = TensorVideo(frames, fps)
    assert tv.frames24 == 144 and torch.equal(tv.frames(96, 144), whole[96:144])


def test_window_video_covers_each_window_in_its_own_coordinates():
    plan = plan_windows(6, version="1.0")  # 145 frames: windows at frames 0 and 72
    assert [w.frame_start for w in plan.windows] == [0, 72]
    frames = torch.rand(150, 64, 64, 3)
    wv = WindowVideo(TensorVideo(frames, 24), plan, area=TINY_AREA)
    assert wv.frames == 145  # the frames past the clip's end are not used
    assert [wv.covered(0), wv.covered(1)] == [31, 19]  # 73 frames from 72: 1 + 72 // 4 latent frames
    inp = wv.window_input(1)
    assert torch.equal(inp.frames, frames[72:145]) and inp.covered == 19
    assert wv.guided_frames == 145
    short = WindowVideo(TensorVideo(frames[:50], 24), plan, area=TINY_AREA)
    assert [short.covered(0), short.covered(1)] == [13, 0] and short.window_input(1) is None
    assert short.guided_frames == 49  # 13 whole latent frames


def test_window_guides_merge_the_given_video_with_the_carried_frames():
    plan = plan_windows(12, version="1.0")
    shape = (1, 48, plan.window_latents, 4, 4)
    prev = type("L", (), {"video": torch.randn(shape), "audio": torch.randn(1, plan.window_audio_latents, 20)})()
    given = torch.randn(1, 48, 5, 4, 4)
    (g0,) = window_guides(plan, 0, None, video_shape=shape, given_video=given)
    assert g0.stream == "video" and g0.mask.tolist() == [True] * 5 + [False] * 26
    assert torch.equal(g0.latent[:, :, :5], given)
    g1 = window_guides(plan, 1, prev, video_shape=shape, given_video=given)[0]
    o = plan.overlap_latents  # 13 carried, the first 5 of them replaced by the given frames
    assert g1.mask.tolist() == [True] * o + [False] * (31 - o)
    assert torch.equal(g1.latent[:, :, :5], given)
    assert torch.equal(g1.latent[:, :, 5:o], prev.video[:, :, -o + 5:])
    with pytest.raises(ValueError, match="clip's size"):
        window_guides(plan, 0, None, video_shape=shape, given_video=torch.randn(1, 48, 5, 2, 2))


def test_every_window_holds_the_given_video_and_is_encoded_just_before_it_is_sampled(pipe):
    plan = plan_windows(6, version="1.0")
    frames = torch.rand(145, 64, 64, 3)
    wv = WindowVideo(TensorVideo(frames, 24), plan, area=TINY_AREA)
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    events, given = [], {}

    def encode(k):
        events.append(("encode", k))
        given[k] = wv.latent(k, pipe.video_vae)
        return given[k]

    wins = []
    for k, lat in enumerate(sample_windows(pipe.model, [cond] * 2, plan, height=64, width=64, given_video=encode,
                                           settings=SamplingSettings(steps=2, seed=3))):
        events.append(("window", k))
        wins.append(lat)
    assert events == [("encode", 0), ("window", 0), ("encode", 1), ("window", 1)]
    assert given[0].shape[2] == 31 and given[1].shape[2] == 19
    for k in (0, 1):
        c = given[k].shape[2]
        assert torch.equal(wins[k].video[:, :, :c], given[k])
    assert not torch.allclose(wins[1].video[:, :, 19:], torch.zeros_like(wins[1].video[:, :, 19:]), atol=1e-3)


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_generate_video_without_seconds_follows_the_video(weights, clip30, tmp_path, caplog):
    out = tmp_path / "v2a.mp4"
    rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                   "--device", "cpu", "--video", clip30, "--out", str(out)])
    assert rc == 0
    got = _frames(out)
    assert len(got) == 144  # as long as the video, two windows (was: "the video has 144 frames ... trim it")
    src = FileVideo(clip30)
    for k in (0, 60, 100, 140):  # the MP4 shows the given frames in both windows (H.264 twice: a few levels off)
        want = src.frames(k, k + 1)[0].float()
        assert (torch.from_numpy(got[k]).float() - want).abs().mean() < 4, k
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                       "--device", "cpu", "--video", clip30, "--seconds", "5", "--out", str(tmp_path / "t.mp4")])
    assert rc == 0 and len(_frames(tmp_path / "t.mp4")) == 121
    assert "--seconds 5 uses the first 121 of the video's 144 frames at 24 fps (6.00 s)" in caplog.text
    rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                   "--device", "cpu", "--video", clip30, "--seconds", "8", "--out", str(tmp_path / "l.mp4")])
    got = _frames(tmp_path / "l.mp4")
    assert rc == 0 and len(got) == 193  # longer than the video: the rest is generated
    assert (torch.from_numpy(got[120]).float() - src.frames(120, 121)[0].float()).abs().mean() < 4


def test_generate_audio_without_seconds_follows_the_track(weights, tmp_path):
    wav = tmp_path / "voice.wav"
    t = torch.arange(int(6.5 * 22050)) / 22050
    write_wav(str(wav), (0.3 * torch.sin(2 * torch.pi * 220 * t))[None], sample_rate=22050)
    out = tmp_path / "a2v.mp4"
    rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                   "--device", "cpu", "--audio", str(wav), "--out", str(out), "--wav"])
    assert rc == 0
    assert len(_frames(out)) == 157  # floor(6.5 * 24) + 1
    assert os.path.getsize(tmp_path / "a2v.wav") == 44 + 2 * round(157 * 16000 / 24)


def test_ranges_after_a_seek_are_the_frames_of_a_full_decode(tmp_path):
    """A keyframe every 10 frames: reading a late range seeks and still returns exactly those frames."""
    import ovi_core.io.media as media

    path = str(tmp_path / "gop10.mp4")
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = 10
        for k in range(200):
            img = torch.full((64, 64, 3), k, dtype=torch.uint8).numpy()
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    whole = list(media.iter_video_frames(path, range(200)))
    with av.open(path) as c:
        keys = sum(1 for p in c.demux(video=0) if p.is_keyframe)
    assert len(whole) == 200 and keys >= 10
    for a, b in ((55, 70), (60, 61), (123, 150), (190, 200)):
        with av.open(path) as c:
            assert media._seek_before(c, c.streams.video[0], a) > 0  # it did seek past frame 0
        got = list(media.iter_video_frames(path, range(a, b)))
        assert all(torch.equal(x, y) for x, y in zip(got, whole[a:b], strict=True)), (a, b)


def test_chunked_reading_and_conversion_give_the_same_values(clip30):
    """Frames are read and converted to the VAE's input a chunk at a time (memory flat in the source's size): the
    same frames and bit-identical pixels as reading and converting them at once."""
    import torch.nn.functional as F

    from ovi_core.conditioning.video_in import VideoInput, to_pixels

    src = FileVideo(clip30)
    for a, b, size in ((0, 144, 16), (37, 121, 5), (100, 200, 16)):
        assert torch.equal(torch.cat(list(src.chunks(a, b, size))), src.frames(a, b)), (a, b, size)
    frames = src.frames(0, 121)
    whole = frames.float().div(255.0).permute(0, 3, 1, 2) * 2.0 - 1.0
    whole = F.interpolate(whole, size=(96, 160), mode="bicubic", align_corners=False).permute(1, 0, 2, 3)[None]
    assert torch.equal(VideoInput(frames=frames, height=96, width=160, latent_frames=31).pixels(), whole)
    assert torch.equal(to_pixels(src.chunks(0, 121, 7), count=121, height=96, width=160), whole)
