"""End to end on tiny weights written in the official layout: prompt (+ image) -> MP4 with audio."""

import os
import shutil
from dataclasses import replace

import av
import pytest
import torch

from ovi_core import sizes
from ovi_core.cli import main as cli
from ovi_core.io.weights import resolve_weights
from ovi_core.runtime.devices import pick_dtype
from ovi_core.runtime.memory import BlockSwapper
from ovi_core.sampling.av import encode_image, sample_av
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import encode_prompts
from ovi_core.tiny import TINY_AREA

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PROMPT = "A man in a red coat says <S>Hello from Ovi.<E> Audio: clear male voice, city ambience."


def _probe(path):
    with av.open(path) as c:
        v = [s for s in c.streams if s.type == "video"]
        a = [s for s in c.streams if s.type == "audio"]
        assert len(v) == 1 and len(a) == 1
        frames = sum(1 for _ in c.decode(video=0))
        vcodec, acodec = v[0].codec_context.name, a[0].codec_context.name
    with av.open(path) as c:
        n = sum(f.samples for f in c.decode(audio=0))
        rate = c.streams.audio[0].rate
    return vcodec, frames, acodec, n / rate


def test_stage_names_stay_importable_from_the_pipeline():
    """The stages moved to their own modules; ``ovi_core.pipeline`` still hands out the very same objects."""
    import ovi_core.pipeline as facade
    from ovi_core.runtime import devices
    from ovi_core.sampling import av
    from ovi_core.text import conditioning

    homes = {devices: ["pick_device", "pick_dtype"], conditioning: ["Conditioning", "encode_prompts"],
             av: ["AVLatents", "make_noise", "encode_image", "sample_av", "ProgressFn", "InterruptFn",
                  "VIDEO_LATENT_CHANNELS", "AUDIO_LATENT_CHANNELS", "FPS"]}
    for mod, names in homes.items():
        for name in names:
            assert name in facade.__all__ and getattr(facade, name) is getattr(mod, name), name


def test_text_to_av_mp4(pipe, tmp_path):
    assert pipe.version == "1.0" and pipe.target_area == TINY_AREA
    res = pipe.generate(PROMPT, steps=2, seed=1)
    assert res.frames.shape == (121, 64, 64, 3)
    assert 0.0 <= res.frames.min() and res.frames.max() <= 1.0
    assert res.waveform.shape == (1, 157 * 2 * 256) and res.sample_rate == 16000
    out = pipe.save(res, str(tmp_path / "clip.mp4"), wav=True)
    vcodec, frames, acodec, seconds = _probe(out)
    assert (vcodec, frames, acodec) == ("h264", 121, "aac")
    assert abs(seconds - 121 / 24) < 0.05
    assert os.path.isfile(tmp_path / "clip.wav")
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "clip.wav"]  # no temporary leftovers
    # the prompt was converted to the 1.0 caption format for this model version
    assert "<AUDCAP>" in res.prompt and "Audio:" not in res.prompt


def test_seed_reproduces_and_differs(pipe):
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    kw = dict(height=64, width=64, device="cpu", dtype=torch.float32)
    a = sample_av(pipe.model, cond, settings=SamplingSettings(steps=2, seed=5), **kw)
    b = sample_av(pipe.model, cond, settings=SamplingSettings(steps=2, seed=5), **kw)
    c = sample_av(pipe.model, cond, settings=SamplingSettings(steps=2, seed=6), **kw)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.video, c.video)


def test_image_to_av_holds_first_latent_frame(pipe, tmp_path):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(48, 80, 3, generator=g)  # a landscape first frame
    lat_img = encode_image(pipe.video_vae, image, area=pipe.target_area, device="cpu")
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    lat = sample_av(pipe.model, cond, height=0, width=0, settings=SamplingSettings(steps=3, seed=3),
                    image_latent=lat_img, device="cpu", dtype=torch.float32)
    # the output takes the image's snapped size, and latent frame 0 is exactly the encoded image
    assert lat.video.shape[-2:] == lat_img.shape[-2:]
    assert torch.equal(lat.video[:, :, :1], lat_img)
    assert not torch.equal(lat.video[:, :, 1:2], lat_img)
    res = pipe.generate(PROMPT, image=image, steps=2)
    h, w = sizes.i2v_size_for_image(48, 80, area=pipe.target_area)
    assert res.frames.shape == (121, h, w, 3)


def test_block_swap_hook_gives_same_result(pipe):
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    kw = dict(height=64, width=64, settings=SamplingSettings(steps=2, seed=2), device="cpu", dtype=torch.float32)
    ref = sample_av(pipe.model, cond, **kw)
    calls = []
    swapper = BlockSwapper(pipe.model, device="cpu", resident=1)
    inner = pipe.model.block_hook
    pipe.model.block_hook = lambda i: (calls.append(i), inner(i))
    try:
        got = sample_av(pipe.model, cond, **kw)
    finally:
        swapper.detach()
    assert torch.equal(ref.video, got.video) and torch.equal(ref.audio, got.audio)
    assert calls[: pipe.model.num_layers] == list(range(pipe.model.num_layers))


def test_audio_rope_scale_changes_only_when_overridden(pipe):
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    kw = dict(height=64, width=64, device="cpu", dtype=torch.float32)
    s = SamplingSettings(steps=1, seed=2)
    ref = sample_av(pipe.model, cond, settings=s, **kw)
    same = sample_av(pipe.model, cond, settings=replace(s, audio_rope_scale=0.19676), **kw)
    other = sample_av(pipe.model, cond, settings=replace(s, audio_rope_scale=1.0), **kw)
    assert torch.equal(ref.audio, same.audio)
    assert not torch.equal(ref.audio, other.audio)
    assert pipe.model.audio_model.config.temporal_rope_scaling_factor == pytest.approx(0.19676)


def test_bad_inputs_fail_before_heavy_work(pipe):
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe.generate("   ")
    with pytest.raises(ValueError, match="solver"):
        pipe.generate(PROMPT, solver="heun")
    with pytest.raises(ValueError, match="slg_layer"):
        pipe.generate(PROMPT, steps=1, slg_layer=99)
    assert pick_dtype("fp16", torch.device("cpu")) == torch.bfloat16  # fp16 refused (overflows), upcast


def test_missing_weights_listed_offline(tmp_path, weights):
    partial = tmp_path / "w"
    shutil.copytree(weights, partial)
    os.remove(partial / "MMAudio" / "ext_weights" / "best_netG.pt")
    os.remove(partial / "Wan2.2-TI2V-5B" / "Wan2.2_VAE.pth")
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights(str(partial), download=False)
    msg = str(e.value)
    assert "best_netG.pt" in msg and "hkchengrex/MMAudio" in msg
    assert "Wan2.2_VAE.pth" in msg and "Wan-AI/Wan2.2-TI2V-5B" in msg


def test_cli_generate_and_tiny_weights(tmp_path):
    root = tmp_path / "w"
    assert cli.main(["tiny-weights", str(root)]) == 0
    out = tmp_path / "o.mp4"
    assert cli.main(["generate", "--weights", str(root), "--prompt", PROMPT, "--steps", "1", "--offline",
                     "--out", str(out)]) == 0
    assert _probe(str(out))[:3] == ("h264", 121, "aac")
    # an impossible size is rejected with a clear error, and no file is written
    bad = tmp_path / "bad.mp4"
    assert cli.main(["generate", "--weights", str(root), "--prompt", PROMPT, "--size", "0x64", "--offline",
                     "--out", str(bad)]) == 2
    assert not bad.exists()


def test_failed_download_is_reported_with_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: every download fails, and says which file
    from ovi_core.io.weights import COMPONENT_FILES, download_file

    with pytest.raises(FileNotFoundError, match="hkchengrex/MMAudio.*ext_weights/best_netG.pt"):
        download_file(COMPONENT_FILES["bigvgan"], str(tmp_path), flatten=True)
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights(str(tmp_path), version="1.1", download=True)
    assert "model_960x960.safetensors" in str(e.value) and "Could not download" in str(e.value)


def test_interrupt_is_honoured_inside_a_step(pipe):
    """A cancel raised by check_interrupt stops the run between fused blocks, and the model is left clean."""
    cond = encode_prompts(pipe.text_encoder, PROMPT, version="1.0")
    calls = {"n": 0}

    class Cancelled(Exception):
        pass

    def check():
        calls["n"] += 1
        if calls["n"] == 4:  # 1 before step 0, then once per fused block: the 3rd block of step 0
            raise Cancelled

    with pytest.raises(Cancelled):
        sample_av(pipe.model, cond, height=64, width=64, settings=SamplingSettings(steps=3), device="cpu",
                  dtype=torch.float32, check_interrupt=check)
    assert calls["n"] == 4 and pipe.model.block_hook is None


def test_csv_batch_from_the_cli(tmp_path, weights):
    img = os.path.join(DATA, "ovi_example_89.png")
    csv = tmp_path / "prompts.csv"
    csv.write_text(f'text_prompt,image_path\n"{PROMPT}",\n"A cat says <S>meow<E> Audio: a cat.",{img}\n')
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["generate", "--weights", weights, "--prompt", str(csv), "--steps", "1", "--offline",
                     "--out", str(out)]) == 0
    files = sorted(os.listdir(out))
    assert files == ["ovi_000.mp4", "ovi_001.mp4"]
    with av.open(str(out / "ovi_001.mp4")) as c:
        s = c.streams.video[0]
        assert s.width != s.height  # the i2v clip takes the image's (landscape) aspect


def test_draft_keeps_a_small_size_and_warns(pipe):
    """``draft``: a size below the trained area (64x64 for the tiny model) is kept, with a warning; the default
    rescales it up. A first frame is kept at its own (smaller) area too."""
    res = pipe.generate(PROMPT, width=64, height=32, steps=1, draft=True)
    assert res.frames.shape[1:3] == (32, 64)
    assert any("not what the model was trained for" in w for w in res.warnings)
    assert pipe.size_for(64, 32) != (32, 64) and pipe.size_for(64, 32, draft=True) == (32, 64)
    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0))
    res = pipe.generate(PROMPT, image=image, steps=1, draft=True)
    assert res.frames.shape[1:3] == (32, 32)
