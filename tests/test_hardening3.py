"""Hardening round 3 (issue 24): a LoRA for another model width, GGUF block scales that are NaN/Inf, and a GGUF
header with an absurd number of metadata keys: each refused through the CLI before any weights load."""

import os

import pytest
import torch

PROMPT = "A man in a red coat says <S>Hello.<E> Audio: clear male voice."


@pytest.fixture(scope="module")
def broken_weights(tmp_path_factory):
    """Tiny weights whose VAE is garbage: a run that gets as far as loading fails on it (and says so)."""
    from ovi_core.tiny import write_tiny_weights

    root = str(tmp_path_factory.mktemp("w3") / "w")
    write_tiny_weights(root)
    with open(os.path.join(root, "Wan2.2-TI2V-5B", "Wan2.2_VAE.pth"), "wb") as f:
        f.write(b"not a checkpoint" * 64)
    return root


def _run(weights, tmp_path, capsys, *extra, loads=False):
    from ovi_core.cli import main as cli

    args = ["generate", "--weights", weights, "--steps", "1", "--offline", "--out", str(tmp_path / "o.mp4"),
            "--prompt", PROMPT]
    try:
        rc = cli.main([*args, *extra])
    except SystemExit as e:  # argparse refusals
        rc = e.code
    err = capsys.readouterr().err
    assert ("Wan2.2_VAE" in err) == loads, err  # refused before any weights load (or, the control, gets there)
    return rc, err


def _lora(path, width):
    from safetensors.torch import save_file

    k = "video_model.blocks.0.self_attn.q"
    save_file({f"{k}.lora_down.weight": torch.zeros(4, width), f"{k}.lora_up.weight": torch.zeros(width, 4),
               f"{k}.alpha": torch.tensor(4.0)}, str(path))
    return str(path)


def _fusion_dim(weights):
    from ovi_core.io import checkpoints as ck
    from ovi_core.io.weights import resolve_weights

    shapes = ck.peek(resolve_weights(weights, download=False).fusion)
    return int(shapes["video_model.blocks.0.self_attn.q.weight"].shape[1])


def test_lora_for_another_width_is_refused_before_loading(broken_weights, tmp_path, capsys):
    """A LoRA whose lora_down in_features differ from the fusion model's width passed every check up front and
    failed only after the DiT had loaded."""
    dim = _fusion_dim(broken_weights)
    ok = _lora(tmp_path / "fits.safetensors", dim)
    _run(broken_weights, tmp_path, capsys, "--lora", ok, loads=True)  # the control gets as far as loading
    bad = _lora(tmp_path / "wide.safetensors", dim + 8)
    rc, err = _run(broken_weights, tmp_path, capsys, "--lora", bad)
    assert rc == 2, err
    assert "wide.safetensors" in err and "does not fit" in err and str(dim + 8) in err and str(dim) in err, err
