"""``--source CLIP --redo audio:A-B|video:A-B`` on a clip longer than one window: only the windows covering the range
are re-run, and every other frame and sample of the source is kept bit for bit."""

import wave

import av
import pytest
import torch

from ovi_core.cli import main as cli
from ovi_core.conditioning.audio_in import to_mono_16k
from ovi_core.io.media import read_audio, write_mp4
from ovi_core.longclip.plan import plan_windows
from ovi_core.longclip.redo import plan_redo, redo_stream
from ovi_core.longclip.video_guide import FileVideo
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import encode_prompts

PROMPT = "A man in a red coat says <S>Hello.<E> <AUDCAP>Clear male voice.<ENDAUDCAP>"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An 8 s clip (193 frames at 24 fps, 64x64, a moving gradient) with a 16 kHz tone: two windows of the 5 s model."""
    path = tmp_path_factory.mktemp("src") / "src.mp4"
    x = torch.linspace(0, 1, 64)
    frames = torch.stack([((x[None, :, None] + k / 193) % 1).expand(64, 64, 3) for k in range(193)])
    t = torch.arange(round(193 * 16000 / 24)) / 16000
    write_mp4(str(path), frames, (0.3 * torch.sin(2 * torch.pi * 220 * t))[None], fps=24, sample_rate=16000)
    return str(path)


def test_redo_windows_cover_the_range_and_no_more():
    rp = plan_redo("audio", 10.0, 11.0, frames=481, samples=320_667, version="1.0")  # a 20 s clip: 6 windows
    assert plan_windows(20, version="1.0").num_windows == 6 and rp.plan.num_windows == 1
    (w,) = rp.plan.windows
    assert w.frame_start % 4 == 0 and w.frame_start <= 240 and w.frame_start + 121 >= 264  # centred on 10-11 s
    assert (rp.first, rp.stop) == (312 * 512, 344 * 512) and rp.cuts == (rp.first, rp.stop)
    rp = plan_redo("video", 2.0, 14.0, frames=481, samples=320_667, version="1.0")  # longer than a window: a chain
    starts = [w.frame_start for w in rp.plan.windows]
    assert len(starts) == 4 and starts[0] <= rp.first and starts[-1] + 121 >= rp.stop
    assert all(b - a == rp.plan.stride for a, b in zip(starts, starts[1:], strict=False))
    assert rp.cuts[0] == rp.first and rp.cuts[-1] == rp.stop and list(rp.cuts) == sorted(rp.cuts)
    rp = plan_redo("audio", 19.0, 25.0, frames=481, samples=320_667, version="1.0")  # the end: the last window
    assert rp.plan.windows[0].frame_start + 121 >= 481 and rp.stop == 320_667
    with pytest.raises(ValueError, match="clip is"):
        plan_redo("audio", 21.0, 22.0, frames=481, samples=320_667, version="1.0")


@pytest.mark.parametrize(("stream", "start", "end", "windows"), [
    ("audio", 6.0, 7.0, 1), ("video", 6.0, 7.0, 1), ("video", 0.5, 7.5, 2)])
def test_redo_keeps_every_other_frame_and_sample_bit_for_bit(pipe, source, stream, start, end, windows):
    src = FileVideo(source)
    wav, rate = read_audio(source)
    track = to_mono_16k(wav, rate)[None]
    rp = plan_redo(stream, start, end, frames=src.frames24, samples=track.shape[1], version="1.0")
    assert rp.plan.num_windows == windows  # 6-7 s: of the clip's two windows, the one covering the range
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    sampled = []
    chunks = list(redo_stream(pipe, [cond] * windows, rp, source=src, track=track, settings=SamplingSettings(steps=1, seed=2),
                              progress=lambda win, wins, step, steps: sampled.append((win, wins))))
    assert {wins for _, wins in sampled} == {windows}
    frames = torch.cat([f for f, _ in chunks])
    (samples,) = [s for _, s in chunks if s is not None]
    assert chunks[0][1] is not None  # the sound comes with the first frames (the writer muxes it alongside)
    whole = src.frames(0, src.frames24)
    assert frames.shape == whole.shape and frames.dtype == torch.uint8 and samples.shape == track.shape
    if stream == "audio":
        assert torch.equal(frames, whole)
        a, b = rp.first, rp.stop
        assert torch.equal(samples[:, :a], track[:, :a]) and torch.equal(samples[:, b:], track[:, b:])
        assert not torch.allclose(samples[:, a:b], track[:, a:b], atol=1e-3)
    else:
        assert torch.equal(samples, track)
        a, b = rp.first, rp.stop
        if windows == 1:
            assert (a, b) == (141, 169)  # latent frames 36-42 of the clip touch 6-7 s
        assert torch.equal(frames[:a], whole[:a]) and torch.equal(frames[b:], whole[b:])
        assert not torch.equal(frames[a:b], whole[a:b])


def test_generate_redo_on_a_long_clip(weights, source, tmp_path):
    out = tmp_path / "redo.mp4"
    rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline", "--device",
                   "cpu", "--source", source, "--redo", "audio:1.0-2.0", "--wav", "--out", str(out)])
    assert rc == 0
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 193  # the whole clip, not one window of it
    with wave.open(str(tmp_path / "redo.wav"), "rb") as f:
        pcm = torch.frombuffer(bytearray(f.readframes(f.getnframes())), dtype=torch.int16)
    wav, rate = read_audio(source)
    kept = (to_mono_16k(wav, rate).clamp(-1, 1) * 32767).to(torch.int16)
    a, b = 31 * 512, 63 * 512  # latents 31-62 touch 1-2 s
    assert pcm.shape == kept.shape
    assert torch.equal(pcm[:a], kept[:a]) and torch.equal(pcm[b:], kept[b:])
    assert not torch.equal(pcm[a:b], kept[a:b])
