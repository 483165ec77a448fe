"""Ovi under a real ComfyUI's model management (issue #20 items 1, 3, 6c), on the CPU.

Run with a ComfyUI host's own Python and its tree in ``COMFYUI_PATH``::

    COMFYUI_PATH=/path/to/ComfyUI /path/to/ComfyUI/venv/bin/python -m pytest -q tests/test_comfy_host.py

ComfyUI is imported as with ``main.py --cpu``. The fusion DiT is loaded from tiny weights in the official layout
through the loader node into a real ``ModelPatcher`` (layers on ``comfy.ops.manual_cast``), then:

* the patcher's own ``load`` with a ``lowvram_model_memory`` below the model size (ComfyUI's partial loading, which
  leaves layers on the offload device and casts them per call) gives exactly the fully loaded model's output, with
  and without a weight patch (ComfyUI's LoRA mechanism: in place when loaded, ``weight_function`` when streamed);
  unpatching restores the weights bit for bit;
* packed weights (GGUF Q8_0, fp8_scaled) stay packed under the patcher, which counts their packed bytes;
* a sampling-style use goes through ``load_models_gpu`` with the keywords the pack passes, and unloading the
  model drops its run caches.

Skipped without ``COMFYUI_PATH`` (CI has no ComfyUI).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

COMFY = os.environ.get("COMFYUI_PATH", "")
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI tree (and use its Python)")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's modules, imported as ``main.py --cpu`` would (its ``nodes.py`` stays behind the pack's ``nodes``)."""
    if COMFY not in sys.path:
        sys.path.append(COMFY)
    import comfy.options

    comfy.options.enable_args_parsing()
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    try:
        import comfy.cli_args
        import comfy.model_management
        import comfy.model_patcher
        import folder_paths
    finally:
        sys.argv = argv
    if not comfy.cli_args.args.cpu:
        pytest.skip("ComfyUI was imported earlier without --cpu")
    return comfy, folder_paths


@pytest.fixture(scope="module")
def models_dir(comfy, tmp_path_factory):
    d = tmp_path_factory.mktemp("diffusion_models")
    comfy[1].add_model_folder_path("diffusion_models", str(d))
    return d


def _load(name: str, precision: str = "fp32", memory_mode: str = "auto"):
    from nodes.loaders import OviFusionModelLoader

    (handle,) = OviFusionModelLoader().load(name, precision, "auto", memory_mode, 10)
    return handle


def _run(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    v = torch.randn(2, cfg.video.in_dim, 3, 4, 4, generator=g)
    a = torch.randn(2, 8, cfg.audio.in_dim, generator=g)
    ctx = torch.randn(2, 5, cfg.video.text_dim, generator=g)
    with torch.no_grad():
        return model(v, a, torch.tensor([700.0, 250.0]), ctx, ctx, first_frame_clean=True)


def _same(x, y) -> bool:
    return all(torch.equal(i, j) for i, j in zip(x, y, strict=True))


def _streamed(patcher) -> list[str]:
    """Names of the layers a partial load left streaming (cast per call)."""
    return [n for n, m in patcher.model.named_modules() if hasattr(m, "prev_comfy_cast_weights")]


def test_partial_load_equals_full_load_with_and_without_a_weight_patch(comfy, models_dir):
    from ovi_core.model.loader import write_tiny_fusion

    write_tiny_fusion(models_dir / "ovi_tiny.safetensors", seed=7)
    h = _load("ovi_tiny.safetensors")
    patcher = h.patcher
    assert isinstance(patcher, comfy[0].model_patcher.ModelPatcher)
    size = patcher.model_size()
    plain = _run(h.module)

    patcher.load(CPU, lowvram_model_memory=size // 3)  # ComfyUI's partial loading, on the CPU
    streamed = _streamed(patcher)
    assert streamed, "nothing was left to stream: the layers are not on comfy.ops"
    assert 0 < patcher.model.model_loaded_weight_memory < size
    assert _same(_run(h.module), plain)

    # a weight patch (what ComfyUI's LoRA loader adds) on a layer that streams
    key = f"{streamed[0]}.weight"
    patcher.unpatch_model(CPU)
    stored = patcher.model.get_parameter(key).detach().clone()
    delta = torch.randn(stored.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    patcher.add_patches({key: (delta,)}, 1.0)
    patcher.load(CPU, lowvram_model_memory=size // 3)
    layer = patcher.model.get_submodule(streamed[0])
    assert layer.weight_function, "the streamed layer should carry ComfyUI's lowvram patch"
    assert torch.equal(patcher.model.get_parameter(key), stored)  # applied per call, not stored
    partial = _run(h.module)
    assert not _same(partial, plain)

    patcher.unpatch_model(CPU)
    patcher.load(CPU, full_load=True)  # patched in place now
    assert torch.equal(patcher.model.get_parameter(key), stored + delta)
    assert _same(_run(h.module), partial)

    patcher.unpatch_model(CPU)
    assert torch.equal(patcher.model.get_parameter(key), stored)
    assert _same(_run(h.module), plain)


def _pack_q8_0(module) -> None:
    """Every Linear weight GGML can pack, packed to Q8_0 in place (what the GGUF loader holds; writing a GGUF file
    needs the ``gguf`` package, which a ComfyUI host may lack)."""
    from ovi_core.quant import ggml
    from ovi_core.quant.tensor import QuantizedWeight

    for m in module.modules():
        w = m._parameters.get("weight") if isinstance(m, torch.nn.Linear) else None
        if w is not None and ggml.can_quantize(w.shape, ggml.Q8_0):
            raw = ggml.quantize(w.detach().float(), ggml.Q8_0)
            m._parameters["weight"] = torch.nn.Parameter(QuantizedWeight.from_ggml(raw, ggml.Q8_0, w.shape),
                                                         requires_grad=False)


@pytest.mark.parametrize("fmt", ["q8_0", "fp8_scaled"])
def test_packed_weights_stay_packed_and_are_counted_packed(comfy, models_dir, fmt):
    from quant_utils import write_source

    from nodes import _patcher
    from ovi_core.quant.convert import quantize_file
    from ovi_core.quant.tensor import is_quantized

    src = models_dir / f"src_{fmt}.safetensors"
    write_source(src, seed=2, dtype=torch.bfloat16)
    if fmt == "fp8_scaled":
        quantize_file(src, models_dir / f"ovi_{fmt}.safetensors", format=fmt)
        h = _load(f"ovi_{fmt}.safetensors", precision="bf16")
    else:
        h = _load(src.name, precision="bf16")
        _pack_q8_0(h.module)
        h.module.compute_dtype = torch.bfloat16  # as the loader sets it for packed files
        h.patcher = _patcher.manage(h.module, CPU, "dit")
    patcher = h.patcher
    sd = h.module.state_dict()
    packed = [t for t in sd.values() if is_quantized(t)]
    assert len(packed) > 10
    expanded = sum(t.qshape.numel() * 2 for t in packed)  # what they would take in bf16
    packed_bytes = sum(t.raw().numel() for t in packed)
    others = sum(t.numel() * t.element_size() for t in sd.values() if not is_quantized(t))
    assert packed_bytes < 0.6 * expanded
    assert patcher.model_size() == packed_bytes + others  # the patcher counts the packed bytes

    full = _run(h.module)
    patcher.load(CPU, lowvram_model_memory=patcher.model_size() // 3)
    assert _streamed(patcher)
    assert all(is_quantized(t) for t in h.module.state_dict().values() if t.dtype == torch.uint8)
    assert sum(is_quantized(t) for t in h.module.state_dict().values()) == len(packed)
    assert _same(_run(h.module), full)
    patcher.unpatch_model(CPU)


def test_sampling_use_goes_through_load_models_gpu_and_unload_drops_caches(comfy, models_dir):
    from nodes import _patcher
    from ovi_core.model import rope
    from ovi_core.model.loader import write_tiny_fusion

    mm = comfy[0].model_management
    write_tiny_fusion(models_dir / "ovi_tiny2.safetensors", seed=8)
    h = _load("ovi_tiny2.safetensors")
    with _patcher.use_model(h) as m:
        assert any(lm.model is h.patcher for lm in mm.current_loaded_models)  # loaded by ComfyUI
        _run(m)
        assert rope.cached_tables() > 0
    assert rope.cached_tables() == 0  # the run ended
    assert any(lm.model is h.patcher for lm in mm.current_loaded_models)  # ComfyUI keeps it until it needs room
    _run(h.module)  # e.g. another pack calling the module between runs
    assert rope.cached_tables() > 0
    mm.unload_all_models()
    assert not any(lm.model is h.patcher for lm in mm.current_loaded_models)
    assert rope.cached_tables() == 0  # dropped when ComfyUI unloaded the model
