"""Interfaces: `generate --fusion` with a GGUF / a split pair, and the fusion loader node's file list."""

import os

import pytest
from safetensors.torch import load_file

from nodes import loaders
from ovi_core.cli import main as cli
from ovi_core.quant.convert import quantize_file
from ovi_core.quant.kijai import write_kijai_files
from ovi_core.tiny import write_tiny_weights

PROMPT = "A man says <S>Hello.<E> Audio: clear male voice."


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("w"))
    paths = write_tiny_weights(root)
    return root, paths["fusion"]


def test_generate_with_a_gguf_fusion_override(weights, tmp_path):
    root, fusion = weights
    g = str(tmp_path / "ovi_q8_0.gguf")
    quantize_file(fusion, g, format="q8_0")
    os.remove(fusion)  # the override must not need the folder's fusion file
    try:
        out = tmp_path / "o.mp4"
        assert cli.main(["generate", "--weights", root, "--prompt", PROMPT, "--steps", "1", "--offline",
                         "--fusion", g, "--out", str(out)]) == 0
        assert out.stat().st_size > 0
    finally:
        write_tiny_weights(root)


def test_fusion_override_errors_before_loading(weights, tmp_path, capsys):
    root, _ = weights
    out = tmp_path / "o.mp4"
    assert cli.main(["generate", "--weights", root, "--prompt", PROMPT, "--offline", "--fusion",
                     str(tmp_path / "nope.gguf"), "--out", str(out)]) == 2
    assert "--fusion file not found" in capsys.readouterr().err
    assert cli.main(["generate", "--weights", root, "--prompt", PROMPT, "--offline", "--fusion", "a", "b", "c",
                     "--out", str(out)]) == 2
    assert not out.exists()


def test_loader_node_lists_gguf_and_split_pairs(weights, tmp_path, monkeypatch):
    _, fusion = weights
    models = tmp_path / "models"
    monkeypatch.setenv("OVI_MODELS_DIR", str(models))
    dm, unet = models / "diffusion_models", models / "unet"
    dm.mkdir(parents=True)
    unet.mkdir()
    quantize_file(fusion, str(unet / "ovi_q4.gguf"), format="q8_0")
    quantize_file(fusion, str(dm / "ovi_q8.gguf"), format="q8_0")
    vp, ap = write_kijai_files(load_file(fusion), dm)
    choices = loaders.fusion_choices()
    pair = f"{os.path.basename(vp)} + {os.path.basename(ap)}"
    assert {"ovi_q4.gguf", "ovi_q8.gguf", os.path.basename(vp), pair} <= set(choices)
    types = loaders.OviFusionModelLoader.INPUT_TYPES()
    assert types["required"]["model"][0] == choices
    assert "ovi_q4.gguf" in types["optional"]["audio_model"][0]
    assert loaders._resolve_fusion(pair) == [vp, ap]
    assert loaders._resolve_fusion("ovi_q4.gguf") == [str(unet / "ovi_q4.gguf")]
    (handle,) = loaders.OviFusionModelLoader().load(pair, "fp32", "auto", "gpu", 10)
    assert handle.audio_path == ap and handle.module.num_layers == 12
    (h2,) = loaders.OviFusionModelLoader().load("ovi_q4.gguf", "fp8", "auto", "gpu", 10)
    assert h2.module.video_model.blocks[0].self_attn.q.weight.format_name == "Q8_0"
