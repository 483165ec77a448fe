"""OviFusionModelLoader on the GPU paths that can be checked on CPU: fp8 precision converts while reading (issue 22
item 4), and a pre-Ampere GPU is refused before any weight is read (item 2)."""

import os

import pytest
import torch

from ovi_core.model.loader import fp8_state_dict, load_fusion, write_tiny_fusion


@pytest.fixture
def models(tmp_path, monkeypatch):
    dm = tmp_path / "diffusion_models"
    dm.mkdir()
    path = write_tiny_fusion(dm / "model_960x960.safetensors", seed=5)
    monkeypatch.setenv("OVI_MODELS_DIR", str(tmp_path))
    return path


def test_fp8_precision_keeps_the_official_fp8_layout(models):
    from nodes import loaders

    (handle,) = loaders.OviFusionModelLoader().load("model_960x960.safetensors", "fp8", "auto", "offload", 10)
    got = handle.module.state_dict()
    want = fp8_state_dict(load_fusion(models, dtype=handle.dtype).state_dict())
    assert handle.module.compute_dtype == handle.dtype
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)), k


def test_pre_ampere_gpu_is_refused_before_reading(models, monkeypatch):
    from nodes import _comfy, loaders

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a T4 / RTX 20xx
    monkeypatch.setattr(_comfy, "torch_device", lambda: torch.device("cuda", 0))
    read = []
    real_open = open

    def spy_open(file, *args, **kwargs):
        if os.fspath(file) == models:
            read.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy_open)
    with pytest.raises(ValueError, match="older than Ampere"):
        loaders.OviFusionModelLoader().load("model_960x960.safetensors", "auto", "auto", "auto", 10)
    assert not read
