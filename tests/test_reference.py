"""Reference mode (DreamID-Omni): RoPE offsets, reference tails, four-pass guidance, against DreamID-Omni's own code.

``tests/data/dreamid/`` holds inputs and outputs recorded by running DreamID-Omni's FusionModel (outside this
repository) at a tiny random configuration on CPU with a strong init; see the JSON's ``source``.
"""

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.model.config import TINY, FusionConfig
from ovi_core.model.loader import load_fusion, random_fusion
from ovi_core.model.ref_rope import RefLayout, audio_scale_and_offset
from ovi_core.sampling.guides import Guide, GuideSchedule, clean_masks
from ovi_core.sampling.reference import References, make_reference_denoiser

DATA = os.path.join(os.path.dirname(__file__), "data", "dreamid")
T = torch.tensor([700.0])


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.float() - y.float()).norm() / y.float().norm())


@pytest.fixture(scope="module")
def oracle():
    meta = json.load(open(os.path.join(DATA, "dreamid_ref.json")))
    io = load_file(os.path.join(DATA, "dreamid_ref.io.safetensors"))
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    path = os.path.join(DATA, "dreamid_ref.weights.safetensors")
    return meta, io, cfg, path


@pytest.fixture(scope="module")
def model_bf16(oracle):
    _, _, cfg, path = oracle
    return load_fusion(path, dtype=torch.bfloat16, config=cfg)


def _refs(io, n: int, **kw) -> References:
    return References([io[f"inputs.ref_image{j}"][None] for j in range(n)],
                      [io[f"inputs.ref_audio{j}"][None] for j in range(n)], **kw)


def _streams(io, n: int):
    """The model inputs of the oracle run: clip latents with the references appended, batch dim added."""
    v = torch.cat([io["inputs.video"]] + [io[f"inputs.ref_image{j}"] for j in range(n)], dim=1)[None]
    a = torch.cat([io["inputs.audio"]] + [io[f"inputs.ref_audio{j}"] for j in range(n)], dim=0)[None]
    return v, a


def _exact_cpu(meta) -> bool:
    # bf16 matmuls are bit-reproducible on the CPU kind that recorded the data (AVX2); Intel AMX/AVX512-bf16
    # rounds them differently (tests/test_model.py test_golden_sensitive)
    return torch.backends.cpu.get_cpu_capability() == meta.get("cpu_capability")


def _same(meta, x, y, tol=8e-3):
    if _exact_cpu(meta):
        assert torch.equal(x, y), f"not bit-identical: rel {rel(x, y):.3g}"
    else:
        assert rel(x, y) <= tol


def test_offsets_as_the_official_engine_computes_them():
    assert audio_scale_and_offset(torch.bfloat16) == (0.197265625, 760)
    assert audio_scale_and_offset(torch.float32)[1] == 759  # why the dtype matters
    lay = RefLayout.dreamid(2, [4, 5])
    assert lay.video_positions(5).tolist() == [0, 1, 2, 150, 300]
    assert lay.audio_positions(24).tolist() == [*range(15), 760, 761, 762, 763, 1520, 1521, 1522, 1523, 1524]


@pytest.mark.parametrize("n", [1, 2])
def test_rope_tables_match_dreamid(oracle, n):
    """The angle tables DreamID's rope_params_with_offset built in its forward (float32) equal ours exactly."""
    from ovi_core.model.ref_rope import _polar32

    meta, io, cfg, _ = oracle
    lay = _refs(io, n).layout
    f = io["inputs.video"].shape[1] + n
    la = io["inputs.audio"].shape[0] + sum(io[f"inputs.ref_audio{j}"].shape[0] for j in range(n))
    assert lay.video_positions(f).tolist() == io[f"rope.refs{n}.video.positions"].tolist()
    assert lay.audio_positions(la).tolist() == io[f"rope.refs{n}.audio.positions"].tolist()
    pf = io[f"rope.refs{n}.video.table"].shape[1]
    vt = torch.view_as_real(_polar32(lay.video_positions(f), pf, None))
    at = torch.view_as_real(_polar32(lay.audio_positions(la), io[f"rope.refs{n}.audio.table"].shape[1], lay.audio_scale))
    assert torch.equal(vt, io[f"rope.refs{n}.video.table"])
    assert torch.equal(at, io[f"rope.refs{n}.audio.table"])


@pytest.mark.parametrize("n", [1, 2])
def test_one_step_bf16_matches_dreamid(oracle, model_bf16, n):
    """Each of the four passes and the guided velocities of one step, bit for bit (on the recording CPU kind)."""
    meta, io, _, _ = oracle
    refs = _refs(io, n)
    v, a = _streams(io, n)
    pos, vneg, aneg = [io["inputs.ctx_pos"]], [io["inputs.ctx_vneg"]], [io["inputs.ctx_aneg"]]
    with torch.no_grad():
        vp, ap = model_bf16(v, a, T, pos, pos, references=refs.layout)
        vn, an = model_bf16(v, a, T, vneg, aneg, references=refs.layout)
    _same(meta, vp[0], io[f"outputs.refs{n}.pos.video"])
    _same(meta, ap[0], io[f"outputs.refs{n}.pos.audio"])
    _same(meta, vn[0], io[f"outputs.refs{n}.neg.video"])
    _same(meta, an[0], io[f"outputs.refs{n}.neg.audio"])
    calls = []

    def model_fn(*args, **kw):
        calls.append(args[0].shape[0])
        return model_bf16(*args, **kw)

    d = make_reference_denoiser(model_fn, layout=refs.layout, pos_video_ctx=pos, pos_audio_ctx=pos, neg_video_ctx=vneg,
                                neg_audio_ctx=aneg, batch_cfg=False)
    with torch.no_grad():
        gv, ga = d(v, a, T)
    assert calls == [1, 1, 1, 1]  # pos, neg, video-ref-neg, audio-ref-neg
    _same(meta, gv[0], io[f"outputs.refs{n}.guided.video"], tol=3e-2)
    _same(meta, ga[0], io[f"outputs.refs{n}.guided.audio"], tol=3e-2)


def test_batched_passes_differ_only_by_rounding(oracle, model_bf16):
    meta, io, _, _ = oracle
    refs = _refs(io, 2)
    v, a = _streams(io, 2)
    pos, vneg, aneg = [io["inputs.ctx_pos"]], [io["inputs.ctx_vneg"]], [io["inputs.ctx_aneg"]]
    d = make_reference_denoiser(model_bf16, layout=refs.layout, pos_video_ctx=pos, pos_audio_ctx=pos,
                                neg_video_ctx=vneg, neg_audio_ctx=aneg, batch_cfg=True)
    with torch.no_grad():
        gv, ga = d(v, a, T)
    # one bf16 ulp per pass (oneDNN blocks a 4-row batch differently), amplified by the guidance weights
    assert rel(gv[0], io["outputs.refs2.guided.video"]) <= 3e-2
    assert rel(ga[0], io["outputs.refs2.guided.audio"]) <= 3e-2


def test_wrong_offsets_move_the_output(oracle, model_bf16):
    """The strong init makes the offsets visible: plain Ovi RoPE, or the float32 engine's 759, move the result far
    beyond the rounding the tests above allow."""
    _, io, _, _ = oracle
    refs = _refs(io, 2)
    v, a = _streams(io, 2)
    pos = [io["inputs.ctx_pos"]]
    ref_v, ref_a = io["outputs.refs2.pos.video"], io["outputs.refs2.pos.audio"]
    with torch.no_grad():
        v0, a0 = model_bf16(v, a, T, pos, pos)  # no offsets
        lay759 = dataclasses.replace(refs.layout, audio_offset=759)
        _, a1 = model_bf16(v, a, T, pos, pos, references=lay759)
        lay_v = dataclasses.replace(refs.layout, video_frames=1)  # only the last face offset (at 150)
        v2, _ = model_bf16(v, a, T, pos, pos, references=lay_v)
    assert rel(v0[0], ref_v) > 5e-2 and rel(a0[0], ref_a) > 4e-3
    assert rel(a1[0], ref_a) > 2e-3
    assert rel(v2[0], ref_v) > 2e-2


def test_float32_path(oracle):
    """DreamID-Omni has no float32 path (its RoPE, norms and modulation cast to bf16): our float32 run of the same
    weights agrees with its bf16 output to bf16 rounding; the angle tables agree exactly (test above)."""
    meta, io, cfg, path = oracle
    model = load_fusion(path, dtype=torch.float32, config=cfg)
    refs = _refs(io, 2)
    v, a = _streams(io, 2)
    pos = [io["inputs.ctx_pos"]]
    with torch.no_grad():
        vp, ap = model(v, a, T, pos, pos, references=refs.layout)
    assert vp.dtype == torch.float32
    assert rel(vp[0], io["outputs.refs2.pos.video"]) <= 3e-2 and rel(ap[0], io["outputs.refs2.pos.audio"]) <= 3e-2


def test_reference_guide_mode_is_held_with_shared_timestep():
    lat = torch.randn(1, 10, 20)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[7:] = True
    g = Guide("audio", lat, mask, "reference")
    vn, an = torch.randn(1, 48, 3, 4, 4), torch.randn(1, 10, 20)
    sched = GuideSchedule([g], video_noise=vn, audio_noise=an, sigmas=torch.linspace(1, 0, 5), steps=4)
    _, a = sched.before_step(0, vn, an)
    assert torch.equal(a[:, 7:], lat[:, 7:]) and torch.equal(a[:, :7], an[:, :7])
    assert clean_masks([g], video_shape=vn.shape, audio_shape=an.shape) == (None, None)  # not timestep 0
    with pytest.raises(ValueError, match="until < 1"):
        Guide("audio", lat, mask, "reference", until=0.5)


def test_references_validation():
    face, voice = torch.zeros(1, 48, 1, 4, 4), torch.zeros(1, 6, 20)
    with pytest.raises(ValueError, match="1 to 2 faces"):
        References([face] * 3, [voice])
    with pytest.raises(ValueError, match="face reference 0"):
        References([torch.zeros(1, 48, 2, 4, 4)], [voice])
    with pytest.raises(ValueError, match="video_ref_scale"):
        References([face], [voice], video_ref_scale=-1)
    r = References([face], [voice])
    with pytest.raises(ValueError, match="encode the faces at the output size"):
        r.extend_noise(torch.zeros(1, 48, 3, 6, 6), torch.zeros(1, 10, 20))
    with pytest.raises(ValueError, match="at least one frame of its own"):
        RefLayout.dreamid(2, [3]).check(2, 10)


def test_sample_av_reference_mode():
    """Through the real sampler on a tiny model: tails held, four passes per step, the clip returned without tails,
    the zero-scale passes skipped, and a first frame refused."""
    from ovi_core.sampling.av import sample_av
    from ovi_core.sampling.settings import SamplingSettings
    from ovi_core.text.conditioning import Conditioning

    model = random_fusion(TINY, seed=3)
    cond = Conditioning(prompt="p", positive=torch.randn(3, TINY.video.text_dim),
                        video_negative=torch.randn(2, TINY.video.text_dim),
                        audio_negative=torch.randn(2, TINY.video.text_dim), warnings=[])
    face, voice = torch.randn(1, 48, 1, 2, 2), torch.randn(1, 3, 20)
    refs = References([face, face * 0.5], [voice, voice[:, :2]])
    st = SamplingSettings(steps=2, seed=1, slg_layer=-1)
    lat = sample_av(model, cond, height=32, width=32, settings=st, references=refs)
    assert lat.video.shape[2] == 31 and lat.audio.shape[1] == 157  # the 5 s clip, no tails
    assert lat.stats["forwards"] == 8  # 4 passes x 2 steps
    one = sample_av(model, cond, height=32, width=32, settings=st,
                    references=References([face], [voice], video_ref_scale=0, audio_ref_scale=0))
    assert one.stats["forwards"] == 4
    assert not torch.equal(one.video, lat.video)
    with pytest.raises(ValueError, match="no image->AV"):
        sample_av(model, cond, height=32, width=32, settings=st, references=refs, image_latent=face)


def test_dreamid_structured_caption_counts_as_an_audio_caption():
    from ovi_core.text.prompt import check_prompt, convert_prompt

    text = ("[IMAGE_CAPTIONS_START]\n<img1>: A man, identified as <sub1>.\n[IMAGE_CAPTIONS_END]\n"
            "[AUDIO_DESCRIPTION_START]\nCalm voice.\n[AUDIO_DESCRIPTION_END]\n<sub1> says <S>Hello.<E>")
    assert not any("No audio caption" in w for w in check_prompt(text))
    assert any("No audio caption" in w for w in check_prompt("<sub1> says <S>Hello.<E>"))
    # the tags pass unchanged to UMT5 for either version
    assert convert_prompt(text, version="1.1") == text and convert_prompt(text, version="1.0") == text
