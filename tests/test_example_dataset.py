"""The shipped example training dataset (examples/ovi_dataset) and what the dataset errors tell the user."""

from __future__ import annotations

import json
import os

import pytest
from safetensors.torch import load_file

from ovi_core.cli.main import main
from ovi_core.tiny import write_tiny_weights
from ovi_core.training.dataset import EXAMPLE_DATASET, VIDEO_EXTS, PrepareConfig, min_clip_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_example_dataset_is_small_and_captioned():
    assert os.path.samefile(EXAMPLE_DATASET, os.path.join(ROOT, "examples", "ovi_dataset"))
    clips = sorted(f for f in os.listdir(EXAMPLE_DATASET) if f.endswith(VIDEO_EXTS))
    assert len(clips) == 2
    for clip in clips:
        assert os.path.getsize(os.path.join(EXAMPLE_DATASET, clip)) < 32 * 1024  # small enough for the repo
        with open(os.path.join(EXAMPLE_DATASET, os.path.splitext(clip)[0] + ".txt"), encoding="utf-8") as f:
            caption = f.read()
        assert "<S>" in caption and "<E>" in caption and "Audio: " in caption  # Ovi 1.1's prompt format


def test_example_dataset_passes_the_dataset_checks(tmp_path):
    """Through the real preparation (CLI, tiny Ovi 1.1 weights) at the model's own length: both clips kept."""
    weights = tmp_path / "weights"
    write_tiny_weights(str(weights), version="1.1")
    out = tmp_path / "prepared"
    rc = main(["prepare-dataset", EXAMPLE_DATASET, str(out), "--weights", str(weights), "--model-version", "1.1",
               "--area", str(64 * 64), "--device", "cpu"])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    assert index["skipped"] == [] and [it["name"] for it in index["items"]] == ["tone_a", "tone_b"]
    t = load_file(str(out / "tone_a.safetensors"))
    assert t["video_latent"].shape == (48, 31, 4, 4)  # 121 frames -> 31 latent frames, 64 px -> 4
    assert t["audio_latent"].shape == (157, 20)  # one full Ovi 1.1 clip of sound


def test_min_clip_seconds():
    assert min_clip_seconds(PrepareConfig(area=64 * 64, version="1.1")) == pytest.approx(121 / 24)
    assert min_clip_seconds(PrepareConfig(frames=9, area=64 * 64, audio_tokens=12)) == pytest.approx(12 * 512 / 16000)


def test_missing_folder_error_says_what_the_folder_must_hold(tmp_path, capsys):
    rc = main(["prepare-dataset", str(tmp_path / "nope"), str(tmp_path / "out"), "--weights", str(tmp_path),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc != 0 and "does not exist" in err
    for part in ("audio track", "5.04 s", "same-name .txt caption", "<S>...<E>", "Audio: ...", EXAMPLE_DATASET):
        assert part in err, part
    (tmp_path / "empty").mkdir()
    rc = main(["prepare-dataset", str(tmp_path / "empty"), str(tmp_path / "out"), "--weights", str(tmp_path),
               "--frames", "9", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc != 0 and "No clips in" in err and "at least 0.38 s (9 frames at 24 fps)" in err and EXAMPLE_DATASET in err
