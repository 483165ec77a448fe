"""The window loop on the tiny model: guides carry the end of window k into the start of window k+1."""

import pytest
import torch

from ovi_core.longclip.assemble import stitch_latents
from ovi_core.longclip.plan import plan_windows
from ovi_core.longclip.prompts import encode_window_prompts, prompts_for_windows, read_prompt_file, split_prompts
from ovi_core.longclip.runner import sample_windows, window_guides
from ovi_core.pipeline import OviPipeline
from ovi_core.sampling.av import sample_av
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import encode_prompts
from ovi_core.tiny import write_tiny_weights

PROMPT = "A man in a red coat says <S>Hello.<E> <AUDCAP>Clear male voice.<ENDAUDCAP>"
pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster on the shared CPU
KW = dict(height=64, width=64, device="cpu", dtype=torch.float32)


def S(seed: int) -> SamplingSettings:
    return SamplingSettings(steps=2, seed=seed)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("weights"))
    write_tiny_weights(root)
    return OviPipeline.from_weights(root, device="cpu", download=False)


@pytest.fixture(scope="module")
def cond(pipe):
    return encode_prompts(pipe.text_encoder, PROMPT, version="1.0")


@pytest.mark.parametrize("mode", ["replace", "clean"])
def test_overlap_of_the_next_window_is_the_tail_of_the_previous(pipe, cond, mode):
    plan = plan_windows(12, version="1.0")  # 4 windows; the first 3 are enough
    wins = []
    for lat in sample_windows(pipe.model, [cond] * plan.num_windows, plan, settings=S(7), guide_mode=mode, **KW):
        wins.append(lat)
        if len(wins) == 3:
            break
    o, la = plan.overlap_latents, plan.window_audio_latents
    for k in (1, 2):
        prev, cur = wins[k - 1], wins[k]
        oa = plan.windows[k].audio_overlap
        assert torch.equal(cur.video[:, :, :o], prev.video[:, :, -o:])
        assert torch.equal(cur.audio[:, :oa], prev.audio[:, la - oa :])
        # past the overlap the window is new material
        assert not torch.allclose(cur.video[:, :, o:], prev.video[:, :, -(plan.window_latents - o):], atol=1e-3)
        assert not torch.allclose(cur.audio[:, oa:], prev.audio[:, : la - oa], atol=1e-3)


def test_without_guides_the_windows_would_not_match(pipe, cond):
    """The oracle of the test above can fail: window 1 sampled on its own (same seed) has another start."""
    plan = plan_windows(8, version="1.0")
    w0, w1 = list(sample_windows(pipe.model, [cond] * 2, plan, settings=S(7), **KW))
    free = sample_av(pipe.model, cond, settings=S(8), **KW)
    o = plan.overlap_latents
    assert torch.equal(w1.video[:, :, :o], w0.video[:, :, -o:])
    assert not torch.allclose(free.video[:, :, :o], w0.video[:, :, -o:], atol=1e-3)


def test_one_window_is_the_plain_clip(pipe, cond):
    plan = plan_windows(5, version="1.0")
    (only,) = list(sample_windows(pipe.model, [cond], plan, settings=S(11), **KW))
    ref = sample_av(pipe.model, cond, settings=S(11), **KW)
    assert torch.equal(only.video, ref.video) and torch.equal(only.audio, ref.audio)


def test_given_audio_guides_every_window_it_covers(pipe, cond):
    plan = plan_windows(8, version="1.0")
    g = torch.Generator().manual_seed(3)
    given = torch.randn(1, 200, 20, generator=g)  # covers window 0 and part of window 1 (starts at latent 94)
    w0, w1 = list(sample_windows(pipe.model, [cond] * 2, plan, settings=S(2), given_audio=given, **KW))
    a1 = plan.windows[1].audio_start
    assert torch.equal(w0.audio[0], given[0, : plan.window_audio_latents])
    assert torch.equal(w1.audio[0, : 200 - a1], given[0, a1:200])
    assert not torch.allclose(w1.audio[0, 200 - a1 :], torch.zeros_like(w1.audio[0, 200 - a1 :]))


def test_window_guides_shapes_and_masks(pipe):
    plan = plan_windows(12, version="1.0")
    vshape = (1, 48, plan.window_latents, 4, 4)
    assert window_guides(plan, 0, None, video_shape=vshape) == []
    with pytest.raises(ValueError, match="needs the latents"):
        window_guides(plan, 1, None, video_shape=vshape)


def test_progress_names_window_and_step(pipe, cond):
    plan = plan_windows(8, version="1.0")
    seen = []
    list(sample_windows(pipe.model, [cond] * 2, plan, settings=S(1), progress=lambda *a: seen.append(a), **KW))
    assert seen == [(1, 2, 1, 2), (1, 2, 2, 2), (2, 2, 1, 2), (2, 2, 2, 2)]


def test_stitched_latents_of_real_windows_continue_seamlessly(pipe, cond):
    plan = plan_windows(8, version="1.0")
    w = list(sample_windows(pipe.model, [cond] * 2, plan, settings=S(4), **KW))
    video, audio = stitch_latents(((x.video, x.audio) for x in w), plan)
    g1 = plan.windows[1].frame_start // 4
    assert torch.equal(video[:, :, : plan.window_latents], w[0].video)  # replace mode: the overlap is unchanged
    assert torch.equal(video[:, :, g1 : plan.latent_frames], w[1].video[:, :, : plan.latent_frames - g1])
    a1 = plan.windows[1].audio_start
    assert torch.equal(audio[:, a1 : plan.audio_latents], w[1].audio[:, : plan.audio_latents - a1])


def test_prompts_per_window(tmp_path, pipe):
    assert split_prompts("one\n\ntwo\n# note\nthree") == ["one", "two", "three"]
    assert split_prompts("first line\nstill first\n---\nsecond") == ["first line still first", "second"]
    f = tmp_path / "p.txt"
    f.write_text("A <S>Hi.<E>\nB <S>Bye.<E>\n", encoding="utf-8")
    assert read_prompt_file(str(f)) == ["A <S>Hi.<E>", "B <S>Bye.<E>"]
    assert prompts_for_windows(["x"], 3) == ["x", "x", "x"]
    assert prompts_for_windows(["x", "y"], 3) == ["x", "y", "y"]
    with pytest.raises(ValueError, match="at most 2"):
        prompts_for_windows(["a", "b", "c"], 2)
    with pytest.raises(ValueError):
        prompts_for_windows(["  "], 2)
    with pytest.raises(FileNotFoundError):
        read_prompt_file(str(tmp_path / "missing.txt"))
    conds = encode_window_prompts(pipe.text_encoder, ["a <S>x<E>", "b <S>y<E>", "a <S>x<E>"], video_negative="n",
                                  audio_negative="m", version="1.0")
    assert conds[0] is conds[2] and not torch.equal(conds[0].positive[:4], conds[1].positive[:4])


def test_first_frame_guides_window_one_only(pipe, cond):
    from ovi_core.sampling.av import encode_image

    g = torch.Generator().manual_seed(1)
    img = encode_image(pipe.video_vae, torch.rand(64, 64, 3, generator=g), area=pipe.target_area, device="cpu")
    plan = plan_windows(8, version="1.0")
    w0, w1 = list(sample_windows(pipe.model, [cond] * 2, plan, settings=S(3), image_latent=img, **KW))
    assert torch.equal(w0.video[:, :, :1], img)
    o = plan.overlap_latents
    assert torch.equal(w1.video[:, :, :o], w0.video[:, :, -o:])  # window 2 starts from window 1, not the image
