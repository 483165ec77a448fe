"""Model variants, size snapping, first-frame preprocessing, latent shapes and defaults.

Expected sizes were produced by the official ``snap_hw_to_multiple_of_32`` and ``preprocess_image_tensor``
(``_best_hw_for_area``) functions.
"""

import pytest
import torch
import torch.nn.functional as F

from ovi_core.sizes import (
    DEFAULTS,
    MODEL_SPECS,
    audio_rope_scale,
    get_spec,
    i2v_size_for_image,
    latent_shapes,
    preprocess_image,
    snap_hw_to_area,
    validate_size,
)


def test_model_specs():
    s = MODEL_SPECS["1.0"]
    assert (s.area, s.frames, s.video_latent_frames, s.audio_latent_length, s.caption_format) == (
        720 * 720,
        121,
        31,
        157,
        "1.0",
    )
    s = MODEL_SPECS["1.1"]
    assert (s.area, s.frames, s.video_latent_frames, s.audio_latent_length, s.caption_format) == (
        960 * 960,
        121,
        31,
        157,
        "1.1",
    )
    s = MODEL_SPECS["1.1-10s"]
    assert (s.area, s.frames, s.video_latent_frames, s.audio_latent_length, s.caption_format) == (
        960 * 960,
        241,
        61,
        314,
        "1.1",
    )
    assert get_spec("960x960_10s") is s and get_spec("720x720_5s").filename == "model.safetensors"
    with pytest.raises(ValueError, match="1.1-10s"):
        get_spec("2.0")


@pytest.mark.parametrize(
    "hw,area,expected",
    [
        ((720, 720), 720 * 720, (704, 704)),
        ((704, 1280), 960 * 960, (704, 1280)),
        ((704, 1280), 720 * 720, (544, 960)),
        ((512, 992), 720 * 720, (512, 992)),
        ((448, 1120), 960 * 960, (608, 1504)),
        ((48, 80), 0, (64, 64)),  # 1.5 and 2.5 units: Python's half-to-even rounding
        ((960, 960), 960 * 960, (960, 960)),
    ],
)
def test_snap_hw_to_area(hw, area, expected):
    assert snap_hw_to_area(*hw, area=area) == expected


def test_validate_size():
    validate_size(704, 1280)
    for bad, msg in [
        ((0, 512), "positive"),
        ((-32, 64), "positive"),
        ((700, 1280), "704x1280"),
        ((4128, 512), "too large"),
        ((512.0, 512), "integers"),
    ]:
        with pytest.raises(ValueError, match=msg):
            validate_size(*bad)
    with pytest.raises(ValueError):
        snap_hw_to_area(0, 10, area=100)


@pytest.mark.parametrize(
    "hw,area,expected",
    [
        ((1080, 1920), 960 * 960, (704, 1280)),
        ((1920, 1080), 960 * 960, (1280, 704)),
        ((512, 512), 720 * 720, (704, 704)),
        ((600, 800), 720 * 720, (608, 832)),
        ((1000, 333), 960 * 960, (1664, 544)),
        ((77, 1500), 720 * 720, (160, 3168)),
        ((4000, 3000), 960 * 960, (1120, 832)),
    ],
)
def test_i2v_size_for_image(hw, area, expected):
    assert i2v_size_for_image(*hw, area=area) == expected


def test_preprocess_image():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(300, 400, 3, generator=g)
    out = preprocess_image(img, area=720 * 720)
    h, w = i2v_size_for_image(300, 400, area=720 * 720)
    assert out.shape == (1, 3, 1, h, w) and out.dtype == torch.float32
    ref = F.interpolate(img.permute(2, 0, 1)[None] * 2 - 1, size=(h, w), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, :, 0], ref)
    assert out.min() < -1 or out.max() > 1  # bicubic overshoot on noise is kept (no clamp, as the reference)
    # batch input: the first image is used; a constant image stays constant
    const = torch.full((2, 64, 64, 3), 0.25)
    out = preprocess_image(const, area=64 * 64)
    assert out.shape == (1, 3, 1, 64, 64) and torch.allclose(out, torch.full_like(out, -0.5))
    with pytest.raises(ValueError, match="RGB"):
        preprocess_image(torch.rand(8, 8, 4), area=64 * 64)
    with pytest.raises(ValueError, match="255"):
        preprocess_image(torch.zeros(8, 8, 3, dtype=torch.uint8), area=64 * 64)


def test_latent_shapes():
    assert latent_shapes(704, 1280, version="1.1-10s") == ((48, 61, 44, 80), (314, 20))
    assert latent_shapes(960, 960, version="1.1") == ((48, 31, 60, 60), (157, 20))
    assert latent_shapes(704, 704, version="1.0") == ((48, 31, 44, 44), (157, 20))
    with pytest.raises(ValueError):
        latent_shapes(700, 704, version="1.0")


def test_audio_rope_scale():
    assert abs(audio_rope_scale() - 0.19676) < 1e-5
    assert abs(audio_rope_scale() - 31 / (121 / 24) / (16000 / 512)) < 1e-12


def test_defaults():
    assert DEFAULTS["steps"] == 50 and DEFAULTS["solver"] == "unipc" and DEFAULTS["shift"] == 5.0
    assert DEFAULTS["video_guidance_scale"] == 4.0 and DEFAULTS["audio_guidance_scale"] == 3.0
    assert DEFAULTS["slg_layer"] == 11 and DEFAULTS["seed"] == 103
    assert DEFAULTS["video_negative_prompt"] == "jitter, bad hands, blur, distortion"
    assert DEFAULTS["audio_negative_prompt"] == "robotic, muffled, echo, distorted"
