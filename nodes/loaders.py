"""Loader nodes: fusion DiT, UMT5 text encoder, Wan2.2 video VAE, MMAudio VAE + BigVGAN vocoder."""

from __future__ import annotations

import logging
import os

import torch

from . import _comfy, _patcher, _runtime
from ._types import OVI_AUDIO_VAE, OVI_MODEL, OVI_TEXT_ENCODER, OVI_VIDEO_VAE, OviModel, Placed

logger = logging.getLogger(__name__)

MEMORY_MODES = ("auto", "offload", "gpu", "block_swap")
COMPONENT_MEMORY_MODES = ("auto", "offload", "gpu")
# "auto" (bf16 on a GPU, fp32 on CPU) is the default of new nodes; the explicit values of saved workflows stay valid
PRECISIONS = ("auto", "bf16", "fp16", "fp32", "fp8")
ATTENTION = ("auto", "sdpa", "flash_attn_3", "flash_attn_2", "xformers", "sage")
CATEGORY = "Ovi/loaders"

_MEMORY_TIP = ("Where the weights live. auto (recommended): ComfyUI's model management loads the model onto the "
               "GPU when it is used and unloads it when another model needs the room (or on 'Free model and node "
               "cache'); the DiT streams its blocks through the GPU when it does not fit with its activations. "
               "offload: the same, without streaming; gpu: loaded onto the GPU at once; block_swap (DiT only): "
               "always stream the DiT's blocks (lowest VRAM). ComfyUI's --lowvram/--novram make auto stream.")


PAIR_SEP = " + "
_GGUF_FOLDERS = ("diffusion_models", "unet")


def _gguf_files() -> list[str]:
    """``.gguf`` files of ComfyUI's diffusion_models/ and unet/ folders (ComfyUI's own lists leave them out)."""
    out: set[str] = set()
    for folder in _GGUF_FOLDERS:
        for root in _comfy.model_dirs(folder):
            if not os.path.isdir(root):
                continue
            for dirpath, _, files in os.walk(root, followlinks=True):
                for f in files:
                    if f.lower().endswith(".gguf"):
                        out.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def _split_pairs(files: list[str]) -> list[str]:
    """``"<video file> + <audio file>"`` for every kijai-style split pair (``video_model`` / ``audio_model``)."""
    have = set(files)
    return [f"{f}{PAIR_SEP}{f.replace('video_model', 'audio_model')}" for f in files
            if "video_model" in f and f.replace("video_model", "audio_model") in have]


def fusion_choices() -> list[str]:
    """The fusion loader's file list: weight files, GGUF files, split pairs, then the auto-download entries."""
    base = _runtime.choices("diffusion_models", _runtime.FUSION_AUTO)
    autos = [c for c in base if c.startswith(_runtime.AUTO)]
    files = sorted({c for c in base if not c.startswith(_runtime.AUTO)} | set(_gguf_files()))
    return files + _split_pairs(files) + autos


def _resolve_fusion(choice: str) -> list[str]:
    """Paths of a fusion choice: one file, a ``"video + audio"`` pair, or an auto-download entry."""
    if choice.startswith(_runtime.AUTO):
        return [_runtime.resolve("diffusion_models", choice, _runtime.FUSION_AUTO)]
    out = []
    for name in choice.split(PAIR_SEP):
        path = None
        for folder in _GGUF_FOLDERS:
            path = _comfy.model_path(folder, name)
            if path:
                break
        if path is None:
            path = _runtime.resolve("diffusion_models", name, {})  # raises the usual "not in the folder" error
        out.append(path)
    return out


def _check_mode(memory_mode: str) -> None:
    if memory_mode not in COMPONENT_MEMORY_MODES:
        raise ValueError(f"memory_mode must be one of {COMPONENT_MEMORY_MODES}, got {memory_mode!r}.")


def _device_choice(choice: str):
    return torch.device("cpu") if choice == "cpu" else _comfy.torch_device()


class OviFusionModelLoader:
    """Load the Ovi fusion DiT (video + audio towers) from ComfyUI's diffusion_models folder."""

    @classmethod
    def INPUT_TYPES(cls):
        files = fusion_choices()
        audio_files = ["none"] + sorted(set(_comfy.list_models("diffusion_models")) | set(_gguf_files()))
        return {
            "required": {
                "model": (files, {
                    "default": _runtime.default_choice(files, "model_960x960.safetensors"),
                    "tooltip": "The official Ovi checkpoint (model_960x960.safetensors = Ovi 1.1 5 s, "
                               "model_960x960_10s.safetensors = Ovi 1.1 10 s, model.safetensors = Ovi 1.0), or "
                               "the video tower file when an audio tower file is chosen below; also GGUF files (diffusion_models/ "
                               "or unet/), fp8_scaled files and kijai's split pairs ('video + audio'). "
                               "'auto-download' fetches the official file from Hugging Face into "
                               "models/diffusion_models."}),
                "precision": (list(PRECISIONS), {
                    "default": "auto",
                    "tooltip": "Compute precision. auto: bf16 on a GPU (the official code's), fp32 on CPU. bf16 "
                               "matches the official code; fp16 overflows in this model family and is computed "
                               "in bf16; fp8 keeps weights in float8 (half the memory) and computes in bf16 (fp32 "
                               "on CPU); fp32 for CPU or debugging."}),
                "attention": (list(ATTENTION), {
                    "default": "auto",
                    "tooltip": "Attention kernel. auto/sdpa use PyTorch; flash-attn, xformers and sage are used "
                               "when installed (otherwise SDPA)."}),
                "memory_mode": (list(MEMORY_MODES), {"default": "auto", "tooltip": _MEMORY_TIP}),
                "blocks_on_gpu": ("INT", {
                    "default": 10, "min": 0, "max": 64, "step": 1,
                    "tooltip": "block_swap only: fused blocks kept on the GPU (of 30); fewer = less VRAM, slower."}),
            },
            "optional": {
                "audio_model": (audio_files, {
                    "default": "none",
                    "tooltip": "Separate audio tower file (split checkpoints); 'none' when the model file holds "
                               "both towers (the official files)."}),
                "version": (["auto", "1.0", "1.1", "1.1-10s"], {
                    "default": "auto",
                    "tooltip": "Model version (prompt format, size and clip length). auto reads it from the file "
                               "name or metadata."}),
            },
        }

    RETURN_TYPES = (OVI_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Ovi fusion model (video + audio towers); to OviJointSampler, OviTextEncode and the guide nodes.",)
    FUNCTION = "load"
    SEARCH_ALIASES = ["load ovi model", "ovi diffusion model", "ovi unet", "audio video model", "wan2.2 ovi", "character.ai ovi"]
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the Ovi fusion DiT (11.66 B parameters: twin video/audio towers with cross-attention)."

    def load(self, model, precision, attention, memory_mode, blocks_on_gpu, audio_model="none", version="auto"):
        from ovi_core.model.loader import load_fusion

        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}.")
        paths = _resolve_fusion(model)
        path = paths[0]
        audio_path = paths[1] if len(paths) > 1 else ""
        if audio_model and audio_model != "none":
            if len(paths) > 1:
                raise ValueError(f"{model!r} is already a video + audio pair; set audio_model to 'none'.")
            audio_path = _resolve_fusion(audio_model)[0]
            paths.append(audio_path)
        from ovi_core import validate

        # headers (an Ovi fusion file, tower pair, GGUF caps) before anything loads; a GGUF's block scales are
        # checked tensor by tensor as they are read, so the file is read once
        validate.check_plan(validate.Plan(fusion=paths, fusion_what="diffusion model", fusion_values=False))
        device = _comfy.torch_device()
        dtype = _runtime.compute_dtype(precision, device)
        from ovi_core.runtime.devices import check_gpu

        check_gpu(torch.device(device), dtype)  # a pre-Ampere GPU is refused before anything is read (GPU_REVIEW #4)
        load_dev = _patcher.build_device(device, memory_mode)
        # fp8: converted on the CPU tensor by tensor while reading (files packed already are kept as they are)
        module = load_fusion(paths if len(paths) > 1 else path, device=load_dev, dtype=dtype,
                             attention_backend=attention,
                             float8=torch.float8_e4m3fn if precision == "fp8" else None)
        from ovi_core.runtime.attention import probe_backend

        vc = module.config.video  # a chosen kernel is tried once now, on the GPU with small tensors (else SDPA)
        probe_backend(attention, device, dtype, heads=vc.num_heads, head_dim=vc.dim // vc.num_heads)
        from ovi_core.pipeline import fusion_file_info

        info = fusion_file_info(path)
        ver = info.get("version", "1.0") if version == "auto" else version
        from ovi_core import sizes

        spec = sizes.MODEL_SPECS[ver]
        handle = OviModel(module=module, device=torch.device(device), dtype=dtype, memory_mode=memory_mode,
                          path=path, version=ver, target_area=int(info.get("target_area") or spec.area),
                          blocks_on_gpu=int(blocks_on_gpu), audio_path=audio_path)
        return (_patcher.hold(handle, "dit"),)


class OviTextEncoderLoader:
    """Load UMT5-XXL (the official .pth with its tokenizer folder, or ComfyUI's umt5_xxl safetensors)."""

    @classmethod
    def INPUT_TYPES(cls):
        files = _runtime.choices("text_encoders", _runtime.TEXT_AUTO)
        return {
            "required": {
                "text_encoder": (files, {
                    "default": _runtime.default_choice(files, "models_t5_umt5-xxl-enc-bf16.pth"),
                    "tooltip": "UMT5-XXL encoder: models_t5_umt5-xxl-enc-bf16.pth (Wan2.2, official) or ComfyUI's "
                               "umt5_xxl_fp16.safetensors / umt5_xxl_fp8_e4m3fn_scaled.safetensors, in "
                               "models/text_encoders."}),
                "tokenizer": (_runtime.tokenizer_choices(), {
                    "default": "auto",
                    "tooltip": "auto: the tokenizer embedded in ComfyUI's umt5 file, else a google/umt5-xxl folder "
                               "next to the .pth or in models/text_encoders (downloaded when missing)."}),
                "precision": (["auto", "bf16", "fp32"], {
                    "default": "auto",
                    "tooltip": "Compute precision of the encoder. auto: bf16 on a GPU, fp32 on CPU."}),
                "device": (["default", "cpu"], {
                    "default": "default",
                    "tooltip": "default: the GPU ComfyUI uses. cpu: encode on the CPU (slow, saves ~11 GB VRAM)."}),
                "memory_mode": (list(COMPONENT_MEMORY_MODES), {"default": "auto", "tooltip": _MEMORY_TIP}),
            }
        }

    RETURN_TYPES = (OVI_TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The UMT5-XXL text encoder; to OviTextEncode (or OviLongClipSampler).",)
    FUNCTION = "load"
    SEARCH_ALIASES = ["umt5", "t5 text encoder", "load clip", "ovi text encoder"]
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the UMT5-XXL text encoder used by Ovi (512 tokens, 4096-dim embeddings)."

    def load(self, text_encoder, tokenizer, precision, device, memory_mode):
        from ovi_core.text.umt5 import load_text_encoder

        _check_mode(memory_mode)
        path = _runtime.resolve("text_encoders", text_encoder, _runtime.TEXT_AUTO)
        tok = _runtime.find_tokenizer(tokenizer, path) if tokenizer != "auto" else _runtime.ensure_tokenizer(path)
        dev = _device_choice(device)
        dtype = _runtime.compute_dtype(precision, dev)
        module = load_text_encoder(path, tokenizer_path=tok, device=_patcher.build_device(dev, memory_mode), dtype=dtype)
        return (_patcher.hold(Placed(module=module, device=dev, dtype=dtype, memory_mode=memory_mode, path=path), "text"),)


class OviVideoVAELoader:
    """Load the Wan2.2 video VAE (48 latent channels, 16x spatial / 4x temporal compression)."""

    @classmethod
    def INPUT_TYPES(cls):
        files = _runtime.choices("vae", _runtime.VAE_AUTO)
        return {
            "required": {
                "vae": (files, {
                    "default": _runtime.default_choice(files, "Wan2.2_VAE.pth"),
                    "tooltip": "Wan2.2_VAE.pth (Wan-AI/Wan2.2-TI2V-5B) in models/vae. Not the Wan 2.1 VAE."}),
                "precision": (["auto", "bf16", "fp32"], {
                    "default": "auto",
                    "tooltip": "auto: bf16 on a GPU, fp32 on CPU. bf16 halves memory; fp32 is slightly more exact "
                               "(always used on CPU)."}),
                "memory_mode": (list(COMPONENT_MEMORY_MODES), {"default": "auto", "tooltip": _MEMORY_TIP}),
            }
        }

    RETURN_TYPES = (OVI_VIDEO_VAE,)
    RETURN_NAMES = ("video_vae",)
    OUTPUT_TOOLTIPS = ("The Wan2.2 video VAE; to OviDecodeVideo, OviVideoGuide and the sampler's video_vae (image input).",)
    FUNCTION = "load"
    SEARCH_ALIASES = ["wan vae", "wan2.2 vae", "video vae", "load vae"]
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the Wan2.2 video VAE (decodes Ovi's video latents, encodes the first frame)."

    def load(self, vae, precision, memory_mode):
        from ovi_core.vae.wan_vae import load_wan_vae

        _check_mode(memory_mode)
        path = _runtime.resolve("vae", vae, _runtime.VAE_AUTO)
        dev = _comfy.torch_device()
        dtype = torch.float32 if dev.type == "cpu" else _runtime.compute_dtype(precision, dev)
        module = load_wan_vae(path, device=_patcher.build_device(dev, memory_mode), dtype=dtype)
        return (_patcher.hold(Placed(module=module, device=dev, dtype=dtype, memory_mode=memory_mode, path=path), "vae"),)


class OviAudioVAELoader:
    """Load the MMAudio 16 kHz audio VAE and the BigVGAN vocoder."""

    @classmethod
    def INPUT_TYPES(cls):
        vaes = _runtime.choices("vae", _runtime.AUDIO_VAE_AUTO)
        vocoders = _runtime.choices("vae", _runtime.VOCODER_AUTO)
        return {
            "required": {
                "audio_vae": (vaes, {
                    "default": _runtime.default_choice(vaes, "v1-16.pth"),
                    "tooltip": "MMAudio 16 kHz VAE: v1-16.pth (hkchengrex/MMAudio, ext_weights/) in models/vae."}),
                "vocoder": (vocoders, {
                    "default": _runtime.default_choice(vocoders, "best_netG.pt"),
                    "tooltip": "BigVGAN 16 kHz vocoder: best_netG.pt (hkchengrex/MMAudio, ext_weights/) in "
                               "models/vae."}),
                "memory_mode": (list(COMPONENT_MEMORY_MODES), {"default": "auto", "tooltip": _MEMORY_TIP}),
            }
        }

    RETURN_TYPES = (OVI_AUDIO_VAE,)
    RETURN_NAMES = ("audio_vae",)
    OUTPUT_TOOLTIPS = ("The MMAudio VAE with the BigVGAN vocoder; to OviDecodeAudio and OviAudioGuide.",)
    FUNCTION = "load"
    SEARCH_ALIASES = ["mmaudio vae", "bigvgan", "vocoder", "audio vae"]
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the audio decoder: MMAudio VAE (latent -> 80-bin mel) + BigVGAN (mel -> 16 kHz waveform)."

    def load(self, audio_vae, vocoder, memory_mode):
        from ovi_core.audio.codec import load_audio_codec

        _check_mode(memory_mode)
        vae_path = _runtime.resolve("vae", audio_vae, _runtime.AUDIO_VAE_AUTO)
        voc_path = _runtime.resolve("vae", vocoder, _runtime.VOCODER_AUTO)
        dev = _comfy.torch_device()
        module = load_audio_codec(vae_path, voc_path, device=_patcher.build_device(dev, memory_mode),
                                  dtype=torch.float32)
        placed = Placed(module=module, device=dev, dtype=torch.float32, memory_mode=memory_mode, path=vae_path)
        return (_patcher.hold(placed, "audio"),)
