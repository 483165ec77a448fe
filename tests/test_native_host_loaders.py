"""Other files into native Ovi on a real ComfyUI tree (issue #21), each sampled against the same weights in fp32 read
through the stock loader:

* city96's ComfyUI-GGUF "Unet Loader (GGUF)": a GGUF made by ``python -m ovi_core quantize`` and converted by
  ``native-convert`` loads with that pack's own loader, ops and patcher (needs ComfyUI-GGUF installed in the tree,
  ``$COMFYUI_PATH/custom_nodes/ComfyUI-GGUF`` or ``COMFYUI_GGUF_PATH``; those tests are skipped otherwise);
* kijai's combined files (bf16 and fp8_e4m3fn_scaled) through the stock Load Diffusion Model.

Needs ``COMFYUI_PATH``. Run like tests/test_native_host.py (the host's python).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

COMFY = os.environ.get("COMFYUI_PATH", "")
GGUF_PACK = os.environ.get("COMFYUI_GGUF_PATH") or os.path.join(COMFY, "custom_nodes", "ComfyUI-GGUF")
NO_GGUF = not os.path.isfile(os.path.join(GGUF_PACK, "loader.py"))
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI tree")
needs_gguf = pytest.mark.skipif(NO_GGUF, reason="ComfyUI-GGUF is not installed in this ComfyUI tree")

import test_native_host as nh  # noqa: E402
import test_native_host_ecosystem as eco  # noqa: E402

host = nh.host


@pytest.fixture(scope="module")
def gguf_pack(host):
    """ComfyUI-GGUF imported as a package (its modules use relative imports)."""
    name = "comfyui_gguf_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(GGUF_PACK, "__init__.py"),
                                                  submodule_search_locations=[GGUF_PACK])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    spec.loader.exec_module(pack)
    return pack


@pytest.fixture(scope="module")
def files(host, tmp_path_factory):
    """The tiny fusion file as a Q8_0 GGUF in the native layout, and the same weights expanded to fp32 (the oracle)
    in the native safetensors layout."""
    from ovi_core.cli.native import convert
    from ovi_core.model.loader import load_fusion, save_fusion
    from ovi_core.quant.convert import quantize_file

    d = tmp_path_factory.mktemp("ovi_gguf")
    official = str(d / "ovi_q8_0.gguf")
    quantize_file(host["paths"]["fusion"], official, format="q8_0")
    native = convert(official, str(d / "ovi_q8_0_native.gguf"))
    expanded = str(d / "expanded.safetensors")
    save_fusion(load_fusion(official, dtype=torch.float32), expanded, dtype=torch.float32)
    return {"gguf": native, "reference": convert(expanded, str(d / "expanded_native.safetensors"))}


def _load_gguf(pack, path, dequant_dtype=None):
    """What ComfyUI-GGUF's UnetLoaderGGUF(Advanced).load_unet does for a file (its reader, its ops, its patcher);
    ``dequant_dtype`` as the advanced node sets it (None: its default, the products in fp16)."""
    import comfy.sd

    loader = sys.modules[pack.__name__ + ".loader"]
    nodes = sys.modules[pack.__name__ + ".nodes"]
    ops = sys.modules[pack.__name__ + ".ops"].GGMLOps()
    ops.Linear.dequant_dtype = dequant_dtype  # a class attribute, as the node sets it
    sd = loader.gguf_sd_loader(path)
    model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"custom_operations": ops})
    assert model is not None, "ComfyUI could not detect the model"
    return nodes.GGUFModelPatcher.clone(model)


@needs_gguf
@pytest.mark.parametrize("dequant_dtype,tol", [(None, 1e-3), (torch.float32, 1e-6)])
def test_gguf_loader_loads_and_samples_like_the_expanded_weights(gguf_pack, files, host, dequant_dtype, tol):
    """Its default expands Q8_0 as fp16 products (``d * q`` rounded to fp16): within 1e-3 of the fp32 expansion; with
    the advanced node's ``dequant_dtype`` float32 the weights are the same numbers as ours."""
    patcher = _load_gguf(gguf_pack, files["gguf"], dequant_dtype)
    dit = patcher.model.diffusion_model
    assert type(patcher.model).__name__ == "OviModel"
    packed = [n for n, p in dit.named_parameters() if type(p).__name__ == "GGMLTensor"
              and getattr(p, "tensor_type", None) is not None and int(p.tensor_type) == 8]  # Q8_0 bytes kept packed
    assert "blocks.0.self_attn.q.weight" in packed and "audio_model.blocks.0.ffn.0.weight" in packed
    got = eco._streams(eco._run(host, patcher, steps=2))
    want = eco._streams(eco._run(host, nh._load(files["reference"]), steps=2))
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        assert eco._rel(g, w) < tol, eco._rel(g, w)


@needs_gguf
def test_gguf_loader_with_a_lora(gguf_pack, files, host):
    """A LoRA through core's loader on the GGUF model (ComfyUI-GGUF keeps the patches on its tensors and applies them
    in its layers' get_weight) acts like the same LoRA on the expanded weights."""
    import comfy.sd

    dit = nh._load(files["reference"]).model.diffusion_model
    g = torch.Generator().manual_seed(3)
    lora = {}
    for key in ("blocks.0.self_attn.q", "audio_model.blocks.1.ffn.0"):
        w = dit.get_submodule(key).weight
        lora[f"diffusion_model.{key}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.1
        lora[f"diffusion_model.{key}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.1
    outs = []
    for patcher in (_load_gguf(gguf_pack, files["gguf"], torch.float32), nh._load(files["reference"])):
        patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)
        outs.append(eco._streams(eco._run(host, patched, steps=2)))
    base = eco._streams(eco._run(host, nh._load(files["reference"]), steps=2))
    for g, w, b in zip(*outs, base, strict=True):
        assert eco._rel(g, w) < 1e-5, eco._rel(g, w)
        assert eco._rel(w, b) > 1e-3  # the LoRA does act


@pytest.fixture(scope="module")
def scaled_files(host, tmp_path_factory):
    """kijai's combined files (bf16 and fp8_e4m3fn_scaled, ComfyUI-WanVideoWrapper's layout) and our own
    ``quantize --format fp8_scaled`` file converted by ``native-convert``, each written from the tiny official file,
    and for each the same weights in fp32 in the native layout (the oracle, read by ovi_core)."""
    from safetensors.torch import load_file

    from ovi_core.cli.native import convert
    from ovi_core.model.loader import load_fusion, save_fusion
    from ovi_core.quant.convert import quantize_file
    from ovi_core.quant.kijai import write_kijai_files

    d = tmp_path_factory.mktemp("ovi_scaled")
    sd = load_file(host["paths"]["fusion"])
    sources = {}
    for scaled in (False, True):
        (sources[f"kijai_{'fp8_scaled' if scaled else 'bf16'}"],) = write_kijai_files(
            sd, str(d / str(scaled)), fp8_scaled=scaled, combined=True)
    ours = str(d / "ovi_fp8_scaled.safetensors")
    quantize_file(host["paths"]["fusion"], ours, format="fp8_scaled")
    out = {}
    for name, path in sources.items():
        ref = str(d / f"ref_{name}.safetensors")
        save_fusion(load_fusion(path, dtype=torch.float32), ref, dtype=torch.float32)
        out[name] = (path, convert(ref, str(d / f"ref_{name}_native.safetensors")))
    video, audio = write_kijai_files(sd, str(d / "split"), fp8_scaled=True)  # kijai's split pair, combined once
    ref = str(d / "ref_split.safetensors")
    save_fusion(load_fusion([video, audio], dtype=torch.float32), ref, dtype=torch.float32)
    out["kijai_split_fp8_scaled"] = (convert(video, str(d / "split_native.safetensors"), audio=audio),
                                     convert(ref, str(d / "ref_split_native.safetensors")))
    ref = str(d / "ref_ours.safetensors")
    save_fusion(load_fusion(ours, dtype=torch.float32), ref, dtype=torch.float32)
    out["ovi_fp8_scaled"] = (convert(ours, str(d / "ovi_fp8_scaled_native.safetensors")),
                             convert(ref, str(d / "ref_ours_native.safetensors")))
    return out


@pytest.mark.parametrize("name", ["kijai_bf16", "kijai_fp8_scaled", "kijai_split_fp8_scaled", "ovi_fp8_scaled"])
def test_stock_loader_reads_kijai_and_scaled_fp8_files(scaled_files, host, name):
    """kijai's combined file (its modulation naming) and scaled-fp8 files (read by ComfyUI's own scaled-fp8 layers on
    0.3.64, its mixed-precision layers on newer ComfyUI; the float8 weights stay float8) sample like the same weights
    in fp32 read by ovi_core."""
    path, ref = scaled_files[name]
    patcher = nh._load(path)
    assert type(patcher.model).__name__ == "OviModel"
    q = patcher.model.diffusion_model.blocks[0].self_attn.q.weight
    if "fp8" in name:
        assert q.dtype == torch.float8_e4m3fn or type(q).__name__ == "QuantizedTensor"
    got = eco._streams(eco._run(host, patcher, steps=2))
    want = eco._streams(eco._run(host, nh._load(ref), steps=2))
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        assert eco._rel(g, w) < 1e-5, eco._rel(g, w)


@pytest.fixture(scope="module")
def full_vae(tmp_path_factory):
    """A random Wan2.2 VAE at the official size, in the official ``.pth`` layout (bf16, about 1.4 GB)."""
    from ovi_core.vae.wan_config import WanVAEConfig
    from ovi_core.vae.wan_vae import write_tiny_wan_vae

    path = str(tmp_path_factory.mktemp("wan_vae") / "Wan2.2_VAE.pth")
    return write_tiny_wan_vae(path, seed=4, config=WanVAEConfig.full(), dtype=torch.bfloat16)


def test_core_vae_decode_takes_the_video_stream(host, full_vae):
    """Core VAELoader + VAE Decode on a native Ovi LATENT (the NestedTensor's video stream, in ComfyUI's
    un-normalised space) give the frames of **LATENT -> Ovi Latents** + ovi_core's Wan2.2 decoder on the same
    file."""
    nt = pytest.importorskip("comfy.nested_tensor")
    import comfy.sd
    import comfy.utils

    from nodes.native.nodes import OviLatentsFromNative
    from ovi_core.pipeline import decode_video
    from ovi_core.vae.wan_vae import load_wan_vae

    g = torch.Generator().manual_seed(2)
    video, audio = torch.randn(1, 48, 2, 4, 4, generator=g), torch.randn(1, 20, 10, generator=g)
    latent = {"samples": nt.NestedTensor((video, audio))}
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(full_vae))
    core = vae.decode(latent["samples"].unbind()[0])  # what core VAEDecode does with a nested LATENT
    ours = decode_video(load_wan_vae(full_vae), OviLatentsFromNative().convert(latent, "1.1")[0].video)
    core = core.reshape(-1, *core.shape[-3:]).float()
    ours = ours.reshape(-1, *ours.shape[-3:]).float()
    assert core.shape == ours.shape == (5, 64, 64, 3)
    diff = (core - ours).abs().max().item()
    print(f"core VAE Decode vs ovi_core decode: max abs diff {diff:.2e}")
    assert diff < 1e-4, diff
