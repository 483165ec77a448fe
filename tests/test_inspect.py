"""`python -m ovi_core inspect` recognises every component file and names the wrong ones plainly."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from ovi_core.cli import main as cli
from ovi_core.tiny import write_tiny_weights


def _inspect(capsys, path):
    code = cli.main(["inspect", str(path)])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_weights(str(tmp_path_factory.mktemp("w")))


@pytest.mark.parametrize(
    "key, component",
    [("fusion", "ovi-fusion"), ("umt5", "umt5-xxl"), ("wan-vae", "wan2.2-vae"), ("mmaudio-vae", "mmaudio-vae-16k"),
     ("bigvgan", "bigvgan-16k")],
)
def test_every_tiny_component_is_recognised_and_loads_strictly(capsys, tiny, key, component):
    code, rep = _inspect(capsys, tiny[key])
    assert code == 0 and rep["component"] == component and rep["loads_strictly"] is True
    assert rep["parameters"] > 0 and rep["dtype"]


def test_wan21_vae_is_named_as_such(capsys, tmp_path):
    sd = {
        "conv1.weight": torch.zeros(32, 32, 1, 1, 1), "conv1.bias": torch.zeros(32),
        "conv2.weight": torch.zeros(16, 16, 1, 1, 1), "conv2.bias": torch.zeros(16),
        "encoder.conv1.weight": torch.zeros(96, 3, 3, 3, 3), "decoder.conv1.weight": torch.zeros(384, 16, 3, 3, 3),
    }
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(sd, path)
    code, rep = _inspect(capsys, path)
    assert code == 1 and rep["component"] == "wan2.1-vae" and not rep["loads_strictly"]
    assert any("Wan2.2" in n for n in rep["notes"])


def test_t5xxl_is_not_umt5(capsys, tmp_path):
    sd = {
        "shared.weight": torch.zeros(32128, 16),
        "encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(16, 16),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": torch.zeros(32, 2),
        "encoder.block.1.layer.0.SelfAttention.q.weight": torch.zeros(16, 16),
    }
    path = tmp_path / "t5xxl_fp16.safetensors"
    save_file(sd, path)
    code, rep = _inspect(capsys, path)
    assert code == 1 and rep["component"] == "t5" and "umt5_xxl" in " ".join(rep["notes"])


def test_truncated_file_is_reported(capsys, tmp_path, tiny):
    data = open(tiny["fusion"], "rb").read()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2])
    code, rep = _inspect(capsys, path)
    assert code == 1 and "truncated" in rep["error"] and "download it again" in rep["error"]
    assert os.path.getsize(path) == len(data) // 2


def test_a_trained_lora_is_called_a_lora(capsys, tmp_path, tiny):
    from ovi_core.lora.network import LoRANetwork
    from ovi_core.lora.targets import LoRAConfig
    from ovi_core.model.loader import load_fusion

    net = LoRANetwork.for_model(load_fusion(tiny["fusion"]), LoRAConfig(rank=3, targets=("fusion",)), seed=0)
    path = net.save(tmp_path / "style.safetensors", base_version="1.1")
    code, rep = _inspect(capsys, path)
    assert code == 0 and rep["component"] == "lora" and rep["loads_strictly"] is True
    assert rep["description"].startswith("LoRA for the Ovi fusion DiT") and "towers)" not in rep["description"]
    assert rep["rank"] == 3 and rep["version"] == "1.1" and rep["targets"] == ["cross_attn.k_fusion", "cross_attn.v_fusion"]
    # a LoRA for another model family is still called a LoRA, and does not load
    other = tmp_path / "sdxl_lora.safetensors"
    save_file({"lora_unet_down_0.lora_down.weight": torch.zeros(2, 8), "lora_unet_down_0.lora_up.weight": torch.zeros(8, 2)},
              other)
    code, rep = _inspect(capsys, other)
    assert code == 1 and rep["component"] == "lora" and "not in Ovi's" in rep["description"] and rep["problem"]
