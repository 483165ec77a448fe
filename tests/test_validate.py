"""ovi_core.validate: every check that needs no weights, with the boundaries torch and the model really have."""

import os

import pytest
import torch

from ovi_core import sizes, validate
from ovi_core.sampling.checks import (
    MAX_SEED,
    MAX_STEPS,
    check_guidance,
    check_seed,
    check_shift,
    check_slg_layer,
    check_solver,
    check_steps,
)
from ovi_core.text.prompt import check_prompt_text


def test_seed_range_is_what_torch_accepts():
    for seed in (0, 1, 2**63, MAX_SEED):
        assert check_seed(seed) == seed
        torch.Generator("cpu").manual_seed(seed)  # the oracle: torch takes every accepted seed
    for bad in (2**64, 2**70):
        with pytest.raises(ValueError, match=r"0 \.\. 2\*\*64 - 1"):
            check_seed(bad)
        with pytest.raises((RuntimeError, ValueError), match="Overflow"):  # what the user saw before
            torch.Generator("cpu").manual_seed(bad)
    with pytest.raises(ValueError, match="seed"):
        check_seed(-1)  # torch would wrap it to 2**64 - 1: refused, one seed = one meaning
    with pytest.raises(ValueError, match="integer"):
        check_seed("103")
    with pytest.raises(ValueError, match="integer"):
        check_seed(True)


def test_steps_shift_guidance():
    assert check_steps(50) == 50
    for bad in (0, -3, MAX_STEPS + 1):
        with pytest.raises(ValueError, match="steps"):
            check_steps(bad)
    with pytest.raises(ValueError, match="integer"):
        check_steps(2.5)
    assert check_shift(5) == 5.0
    for bad in (0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError, match="shift"):
            check_shift(bad)
    assert check_guidance("video_guidance_scale", -2) == -2.0
    with pytest.raises(ValueError, match="audio_guidance_scale"):
        check_guidance("audio_guidance_scale", float("nan"))


def test_slg_layer_range_early_and_against_the_model():
    assert check_slg_layer(-1) == -1
    assert check_slg_layer(29) == 29  # unknown block count: only the lower bound
    with pytest.raises(ValueError, match="-1"):
        check_slg_layer(-2)
    assert check_slg_layer(11, num_layers=12) == 11
    with pytest.raises(ValueError, match="last block"):
        check_slg_layer(12, num_layers=12)


def test_prompt_and_solver():
    with pytest.raises(ValueError, match="prompt is empty"):
        check_prompt_text("  \n")
    with pytest.raises(ValueError, match="prompt is empty"):
        check_prompt_text(None)
    with pytest.raises(ValueError, match="solver"):
        check_solver("heun")
    validate.check_generation(prompt="a", steps=1, shift=1.0, seed=0, slg_layer=-1)


def test_size_is_snapped_then_checked():
    area = 960 * 960
    assert validate.check_size(None, None, area=area) == sizes.snap_hw_to_area(960, 960, area=area)
    assert validate.check_size(1280, 704, area=720 * 720) == sizes.snap_hw_to_area(704, 1280, area=720 * 720)
    with pytest.raises(ValueError, match="1x100000.*max side"):
        validate.check_size(1, 100000, area=area)
    with pytest.raises(ValueError, match="positive"):
        validate.check_size(0, 64, area=area)


def test_clip_version():
    assert validate.clip_version("1.1", None) == ("1.1", [])
    v, warn = validate.clip_version("1.1", 10)
    assert v == "1.1-10s" and "10 s with a 5 s model" in warn[0]
    assert validate.clip_version("1.1-10s", "10") == ("1.1-10s", [])
    assert validate.clip_version("1.1-10s", 5)[0] == "1.1"
    with pytest.raises(ValueError, match="5 s clips only"):
        validate.clip_version("1.0", 10)
    with pytest.raises(ValueError, match="seconds"):
        validate.clip_version("1.1", 7)


def test_prompt_argument_naming_a_missing_file_is_an_error(tmp_path):
    assert validate.check_prompt_argument("A cat says <S>csv<E>") is False
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        validate.check_prompt_argument(str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match="Prompt file"):
        validate.check_prompt_argument(str(tmp_path / "x.TSV"))
    f = tmp_path / "p.csv"
    f.write_text("text_prompt\nhi\n")
    assert validate.check_prompt_argument(str(f)) is True


def test_output_file_checks(tmp_path):
    assert validate.check_output_file(str(tmp_path / "new" / "sub" / "a.mp4")).endswith("a.mp4")  # created later
    with pytest.raises(ValueError, match="is a folder"):
        validate.check_output_file(str(tmp_path))
    with pytest.raises(ValueError, match=r"end in \.mp4"):
        validate.check_output_file(str(tmp_path / "a.txt"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        validate.check_output_file(str(blocker / "a.mp4"))
    with pytest.raises(ValueError, match="too long"):
        validate.check_output_file(str(tmp_path / ("x" * 300 + ".mp4")))
    with pytest.raises(ValueError, match="is a file"):
        validate.check_output_folder(str(blocker))
    assert validate.check_output_folder(str(tmp_path / "out")) == str(tmp_path / "out")


def test_image_file_must_decode(tmp_path, data_dir):
    validate.check_image_file(os.path.join(data_dir, "ovi_example_89.png"))
    with pytest.raises(FileNotFoundError):
        validate.check_image_file(str(tmp_path / "nope.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.png"):
        validate.check_image_file(str(bad))


@pytest.mark.parametrize("prefix", ["Ovi/ovi", "ovi", "a/b/c", "Ovi\\clip", "  spaced  "])
def test_filename_prefix_inside(prefix, tmp_path):
    validate.check_filename_prefix(prefix)
    validate.check_filename_prefix(prefix, output_dir=str(tmp_path))


@pytest.mark.parametrize("prefix", ["/etc/x", "\\\\server\\share\\x", "C:\\x", "c:x", "../x", "Ovi/../../x",
                                    "a\\..\\..\\x", "a\x00b"])
def test_filename_prefix_outside_is_refused(prefix):
    with pytest.raises(ValueError, match="filename_prefix"):
        validate.check_filename_prefix(prefix)


def test_filename_prefix_through_a_symlink_is_refused(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "link")
    validate.check_filename_prefix("link/x")  # lexically fine
    with pytest.raises(ValueError, match="symbolic link"):
        validate.check_filename_prefix("link/x", output_dir=str(out))
