"""generate flags for LoRAs and faster sampling: --lora FILE[:STRENGTH][:TOWER], --preset, --cfg-reuse, --step-cache."""

from __future__ import annotations

import argparse
import logging

import av
import pytest
import torch
from safetensors.torch import save_file

from ovi_core.cli import main as cli
from ovi_core.cli import speed as speed_cli

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "A man says <S>Hi.<E> Audio: clear male voice."


def test_parse_lora_spec():
    assert speed_cli.parse_lora("a.safetensors") == speed_cli.LoraSpec("a.safetensors", 1.0, "auto")
    assert speed_cli.parse_lora("a.safetensors:0.5") == speed_cli.LoraSpec("a.safetensors", 0.5, "auto")
    assert speed_cli.parse_lora("a.safetensors:-1:both") == speed_cli.LoraSpec("a.safetensors", -1.0, "both")
    assert speed_cli.parse_lora(r"C:\l\a.safetensors:video") == speed_cli.LoraSpec(r"C:\l\a.safetensors", 1.0,
                                                                                    "video")
    with pytest.raises(argparse.ArgumentTypeError):
        speed_cli.parse_lora(":0.5")


def test_parse_window():
    w = speed_cli.parse_window("0.3:0.9:5")
    assert (w.start, w.end, w.refresh) == (0.3, 0.9, 5)
    assert speed_cli.parse_window("off") == "off"
    with pytest.raises(argparse.ArgumentTypeError, match="START:END:REFRESH"):
        speed_cli.parse_window("0.3-0.9")
    with pytest.raises(argparse.ArgumentTypeError, match="start <= end"):
        speed_cli.parse_window("0.9:0.3:5")


def _args(*extra):
    p = cli.build_parser()
    return p.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4", *extra])


def test_prepare_builds_speed_options(tmp_path):
    plan = speed_cli.prepare(_args("--cfg-reuse", "0.3:0.9:5", "--cfg-reuse-audio", "off", "--step-cache", "0.2"))
    assert plan.speed.cfg_reuse.video.refresh == 5 and plan.speed.cfg_reuse.audio is None
    assert plan.speed.step_cache.threshold == 0.2
    plain = speed_cli.prepare(_args())
    assert plain.speed.cfg_reuse is None and plain.speed.step_cache is None and not plain.speed.active


def _wan_lora(path, dim=64, blocks=12):
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(blocks):
        for m in ("self_attn.q", "ffn.2"):
            fin = 128 if m == "ffn.2" else dim  # the tiny FFN is 128 wide
            sd[f"diffusion_model.blocks.{i}.{m}.lora_down.weight"] = torch.randn(2, fin, generator=g) * 0.1
            sd[f"diffusion_model.blocks.{i}.{m}.lora_up.weight"] = torch.randn(dim, 2, generator=g) * 0.1
    save_file(sd, str(path))
    return str(path)


def test_bad_lora_fails_before_weights_load(tmp_path):
    save_file({"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(2, 8)}, str(tmp_path / "x.sft"))
    # the weights folder does not exist: the LoRA error must come first
    rc = cli.main(["generate", "--weights", str(tmp_path / "none"), "--prompt", "p", "--out", str(tmp_path / "o.mp4"),
                   "--lora", str(tmp_path / "x.sft")])
    assert rc == 2
    rc = cli.main(["generate", "--weights", str(tmp_path / "none"), "--prompt", "p", "--out", str(tmp_path / "o.mp4"),
                   "--lora", str(tmp_path / "missing.safetensors")])
    assert rc == 2


def test_generate_with_wan_lora_and_fast_preset(weights, tmp_path, caplog):
    lora = _wan_lora(tmp_path / "fastwan.safetensors")
    out = str(tmp_path / "clip.mp4")
    with caplog.at_level(logging.INFO):
        rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--out", out, "--offline",
                       "--device", "cpu", "--lora", f"{lora}:0.8:video", "--preset", "fast"])
    assert rc == 0
    with av.open(out) as c:
        assert sum(1 for _ in c.decode(video=0)) == 121
    text = caplog.text
    assert "48 keys matched (comfyui naming) -> 24 Linear layers" in text
    assert "forwards 6" in text  # the fast preset: 6 steps, one forward each
