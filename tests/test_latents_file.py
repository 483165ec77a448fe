"""Saved latents (OviSaveLatents, kept latents of a failed write) are user input: one reader, clear errors."""

import pytest
import torch
from safetensors.torch import save_file

from ovi_core.io.latents import AVLatents, load_latents, save_latents


def _lat():
    g = torch.Generator().manual_seed(0)
    return AVLatents(video=torch.randn(1, 48, 2, 4, 4, generator=g), audio=torch.randn(1, 7, 20, generator=g),
                     version="1.1", fps=24)


def test_round_trip(tmp_path):
    lat = _lat()
    back = load_latents(save_latents(tmp_path / "a.ovi_latents.safetensors", lat))
    assert torch.equal(back.video, lat.video) and torch.equal(back.audio, lat.audio)
    assert (back.version, back.fps) == ("1.1", 24)


@pytest.mark.parametrize(("meta", "match"), [
    ({"ovi.fps": "abc"}, "ovi.fps"),
    ({"ovi.fps": "-5"}, "ovi.fps"),
    ({"ovi.version": "9.9"}, "ovi.version"),
])
def test_bad_metadata_names_the_file_and_key(tmp_path, meta, match):
    lat = _lat()
    path = tmp_path / "bad.safetensors"
    save_file({"video": lat.video, "audio": lat.audio}, str(path), metadata=meta)
    with pytest.raises(ValueError, match=match) as e:
        load_latents(path)
    assert "bad.safetensors" in str(e.value)


def test_damaged_foreign_and_missing_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_latents(junk)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors"):
        load_latents(other)
    shapes = tmp_path / "shapes.safetensors"
    save_file({"video": torch.zeros(1, 3, 2, 4, 4), "audio": torch.zeros(1, 7, 20)}, str(shapes))
    with pytest.raises(ValueError, match="48"):
        load_latents(shapes)
    with pytest.raises(FileNotFoundError):
        load_latents(tmp_path / "missing.safetensors")
