"""Nodes of the native path: one LATENT for both streams, Ovi's guider and schedules, and bridges to the ``Ovi*``
nodes. Each validates, converts and calls one function; ComfyUI classes come from :mod:`nodes.native.model`."""

from __future__ import annotations

import torch

from .._types import OVI_AUDIO_VAE, OVI_CONDITIONING, OVI_LATENTS, OVI_MODEL, OVI_VIDEO_VAE

VERSIONS = ["1.0", "1.1", "1.1-10s"]
SECONDS = ["5", "10"]
SOLVERS = ["euler", "unipc", "dpm++"]


def _model_mod():
    from . import model

    return model


def _nested_or_packed(video: torch.Tensor, audio: torch.Tensor):
    """A LATENT tensor holding both streams: a NestedTensor where ComfyUI has one, else frame-packed."""
    from ovi_core.sampling import packed

    from .. import _comfy

    nt = _comfy._try_import("comfy.nested_tensor")
    if nt is not None:
        return nt.NestedTensor((video, audio))
    return packed.pack(video, audio)


def _streams(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """(video ``[B, 48, F, h, w]``, audio ``[B, 20, T]``) of a LATENT tensor made by these nodes."""
    from ovi_core.sampling import packed

    if getattr(samples, "is_nested", False):
        parts = samples.unbind()
        if len(parts) != 2:
            raise ValueError(f"an Ovi LATENT holds 2 streams (video, audio), this one holds {len(parts)}")
        return parts[0], parts[1]
    return packed.unpack(samples)


class OviEmptyLatentAV:
    """An empty LATENT holding Ovi's video and audio streams."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 1280, "min": 32, "max": 4096, "step": 32,
                              "tooltip": "Video width in pixels (multiple of 32)."}),
            "height": ("INT", {"default": 704, "min": 32, "max": 4096, "step": 32,
                               "tooltip": "Video height in pixels (multiple of 32)."}),
            "seconds": (SECONDS, {"default": "5", "tooltip": "Clip length: 5 s (121 frames) or 10 s (241 frames, "
                                  "Ovi 1.1)."}),
            "version": (VERSIONS, {"default": "1.1", "tooltip": "The Ovi model version the latent is for."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip": "Clips per batch."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Video [B, 48, F, H/16, W/16] and audio [B, 20, T] latents in one LATENT (nested on ComfyUI "
                       ">= 0.3.67, frame-packed before); to KSampler / SamplerCustomAdvanced.",)
    SEARCH_ALIASES = ["EmptyOviLatentAV", "ovi empty latent", "ovi latent audio video", "empty av latent"]
    FUNCTION = "make"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Empty Ovi audio+video latent for the stock samplers."

    def make(self, width, height, seconds, version, batch_size):
        from ovi_core import sizes, validate

        spec_version, _ = validate.clip_version(version, seconds)
        (c, f, h, w), (t, ca) = sizes.latent_shapes(int(height), int(width), version=spec_version)
        video = torch.zeros(int(batch_size), c, f, h, w)
        audio = torch.zeros(int(batch_size), ca, t)
        return ({"samples": _nested_or_packed(video, audio)},)


class OviNativeGuider:
    """Ovi's guidance for the stock SamplerCustomAdvanced: video and audio CFG, skip-layer guidance in the negative
    pass, the audio negative prompt as its own conditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A native Ovi MODEL (Load Diffusion Model, or OviModelToNative)."}),
            "positive": ("CONDITIONING", {"tooltip": "The prompt (both towers read it)."}),
            "negative": ("CONDITIONING", {"tooltip": "The video negative prompt."}),
            "video_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                    "tooltip": "Guidance scale of the video stream (official 4.0)."}),
            "audio_cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                    "tooltip": "Guidance scale of the audio stream (official 3.0)."}),
            "slg_layer": ("INT", {"default": 11, "min": -1, "max": 64,
                                  "tooltip": "Fused layer skipped in the negative pass (official 11); -1 or 0: off."}),
        }, "optional": {
            "audio_negative": ("CONDITIONING", {"tooltip": "The audio negative prompt; without it the audio tower "
                                                "reads the negative's own audio text (or the video negative)."}),
        }}

    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("A GUIDER for SamplerCustomAdvanced.",)
    SEARCH_ALIASES = ["ovi cfg", "ovi dual cfg", "audio video guider"]
    FUNCTION = "get_guider"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Per-stream CFG with skip-layer guidance inside the negative pass, as the official Ovi sampler."

    def get_guider(self, model, positive, negative, video_cfg, audio_cfg, slg_layer, audio_negative=None):
        from .guider import OviGuider, with_audio_negative

        if audio_negative is not None:
            negative = with_audio_negative(negative, audio_negative)
        g = OviGuider(model, video_cfg=float(video_cfg), audio_cfg=float(audio_cfg), slg_layer=int(slg_layer))
        g.set_conds(positive, negative)
        return (g,)


class OviNativeSigmas:
    """Ovi's own sigma schedules as SIGMAS."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "solver": (SOLVERS, {"default": "euler", "tooltip": "Whose schedule: euler (diffusers flow-match Euler, "
                                 "as OviJointSampler's euler), unipc or dpm++ (the official solvers' grids)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Number of steps."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.1, "tooltip": "Flow shift."}),
        }}

    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("steps + 1 sigmas ending in 0; with sampler euler this is OviJointSampler's euler.",)
    SEARCH_ALIASES = ["ovi scheduler", "ovi schedule"]
    FUNCTION = "get_sigmas"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "The sigma schedule of Ovi's solvers, for SamplerCustomAdvanced."

    def get_sigmas(self, solver, steps, shift):
        from ovi_core.sampling.schedules import SCHEDULES

        if solver not in SCHEDULES:
            raise ValueError(f"solver must be one of {list(SCHEDULES)}, got {solver!r}")
        return (SCHEDULES[solver](int(steps), float(shift))[0],)


class OviConditioningToNative:
    """OVI_CONDITIONING (OviTextEncode) -> CONDITIONING for the stock samplers."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": (OVI_CONDITIONING, {"tooltip": "From OviTextEncode."})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The prompt.", "The video negative, carrying the audio negative as its own key.")
    SEARCH_ALIASES = ["ovi conditioning bridge"]
    FUNCTION = "convert"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Bridge: Ovi prompt embeddings to CONDITIONING (audio negative kept as its own key)."

    def convert(self, conditioning):
        from .model import AUDIO_CONTEXT_KEY

        c = conditioning.cond
        pos = [[c.positive.float()[None], {}]]
        neg = [[c.video_negative.float()[None], {AUDIO_CONTEXT_KEY: c.audio_negative.float()[None]}]]
        return (pos, neg)


class OviModelToNative:
    """OVI_MODEL -> MODEL, sharing the weights."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (OVI_MODEL, {"tooltip": "From OviFusionModelLoader (any file it reads)."})}}

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A native Ovi MODEL for the stock samplers, LoRA loaders and model patches.",)
    SEARCH_ALIASES = ["ovi model bridge", "ovi to model"]
    FUNCTION = "convert"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Bridge: the Ovi model as a native ComfyUI MODEL (same weights, no copy)."

    def convert(self, model):
        import comfy.model_management as mm
        import comfy.model_patcher

        from ovi_core.lora.targets import unwrap_model

        module = unwrap_model(model.module)
        native = _model_mod().model_from_fusion(module, dtype=module.compute_dtype)
        device = torch.device(model.device)
        offload = device if device.type == "cpu" else mm.unet_offload_device()
        return (comfy.model_patcher.ModelPatcher(native, load_device=device, offload_device=offload),)


class OviLatentsToNative:
    """OVI_LATENTS -> LATENT."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latents": (OVI_LATENTS, {"tooltip": "From OviJointSampler or OviLoadLatents."})}}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The same latents as one LATENT (video un-normalised as ComfyUI stores Wan2.2 latents).",)
    SEARCH_ALIASES = ["ovi latent bridge"]
    FUNCTION = "convert"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Bridge: Ovi latents to a LATENT."

    def convert(self, latents):
        fmt = _model_mod().OviLatentFormat()
        video = fmt.process_out(latents.video.float())
        audio = latents.audio.float().transpose(1, 2)  # [B, 20, T]
        return ({"samples": _nested_or_packed(video, audio)},)


class OviLatentsFromNative:
    """LATENT -> OVI_LATENTS."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "An Ovi LATENT (OviEmptyLatentAV, after sampling)."}),
            "version": (VERSIONS, {"default": "1.1", "tooltip": "The model version the latents were made with."}),
        }}

    RETURN_TYPES = (OVI_LATENTS,)
    OUTPUT_TOOLTIPS = ("Paired latents for OviDecodeVideo / OviDecodeAudio / OviSaveLatents.",)
    SEARCH_ALIASES = ["ovi latent bridge"]
    FUNCTION = "convert"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Bridge: a LATENT to Ovi latents (for the Ovi decoders)."

    def convert(self, samples, version):
        from ovi_core.io.latents import AVLatents

        video, audio = _streams(samples["samples"])
        video = _model_mod().OviLatentFormat().process_in(video.float())
        return (AVLatents(video=video, audio=audio.float().transpose(1, 2).contiguous(), version=version),)


class OviNativeImageToAV:
    """Image -> AV on the stock path: the first latent frame is the encoded image, kept clean by the noise mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "From OviEmptyLatentAV (its size is the output size)."}),
            "video_vae": (OVI_VIDEO_VAE, {"tooltip": "OviVideoVAELoader (Wan2.2 VAE)."}),
            "image": ("IMAGE", {"tooltip": "The first frame; resized and centre-cropped to the latent's size."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent with frame 0 set and a noise_mask that keeps it (timestep 0 in the model).",)
    SEARCH_ALIASES = ["ovi image to video", "ovi i2v", "ovi first frame"]
    FUNCTION = "apply"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Puts an image as the clean first frame of an Ovi LATENT (a mask, as every Ovi guide)."

    def apply(self, samples, video_vae, image):
        from ovi_core.conditioning.first_frame import fit_first_frame

        from .. import _patcher

        video, audio = _streams(samples["samples"])
        b, _, f, h, w = video.shape
        pixels = fit_first_frame(image, h * 16, w * 16)  # [1, 3, 1, H, W] in [-1, 1]
        with _patcher.use(video_vae) as vae, torch.no_grad():
            lat = vae.encode(pixels.to(device=video_vae.device, dtype=video_vae.dtype)).float().cpu()
        first = _model_mod().OviLatentFormat().process_out(lat)  # ComfyUI stores un-normalised latents
        video = video.clone()
        video[:, :, :1] = first
        vmask = torch.ones(b, 1, f, h, w)
        vmask[:, :, 0] = 0
        amask = torch.ones(b, 1, audio.shape[2])
        out = dict(samples)
        out["samples"] = _nested_or_packed(video, audio)
        if getattr(out["samples"], "is_nested", False):
            out["noise_mask"] = _nested_or_packed(vmask, amask)
        else:
            from ovi_core.sampling import packed

            out["noise_mask"] = packed.pack(vmask.expand(-1, 48, -1, -1, -1), amask.expand(-1, 20, -1))
        return (out,)


class OviNativeDecodeAudio:
    """The audio stream of an Ovi LATENT -> AUDIO (MMAudio VAE + BigVGAN, 16 kHz)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE + BigVGAN from OviAudioVAELoader."}),
            "samples": ("LATENT", {"tooltip": "An Ovi LATENT after sampling (core VAEDecode decodes its video)."}),
        }}

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The sound track (16 kHz mono AUDIO) of the first clip of the batch.",)
    SEARCH_ALIASES = ["ovi audio decode", "decode av latent audio"]
    FUNCTION = "decode"
    CATEGORY = "Ovi/native"
    DESCRIPTION = "Decodes the audio stream of an Ovi LATENT (the video stream goes to VAEDecode or OviDecodeVideo)."

    def decode(self, audio_vae, samples):
        from ..decode import OviDecodeAudio

        latents = OviLatentsFromNative().convert(samples, "1.1")[0]  # the version does not matter for audio
        return OviDecodeAudio().decode(audio_vae, latents)


NODE_CLASS_MAPPINGS = {
    "OviEmptyLatentAV": OviEmptyLatentAV,
    "OviNativeGuider": OviNativeGuider,
    "OviNativeSigmas": OviNativeSigmas,
    "OviConditioningToNative": OviConditioningToNative,
    "OviModelToNative": OviModelToNative,
    "OviLatentsToNative": OviLatentsToNative,
    "OviLatentsFromNative": OviLatentsFromNative,
    "OviNativeImageToAV": OviNativeImageToAV,
    "OviNativeDecodeAudio": OviNativeDecodeAudio,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OviEmptyLatentAV": "Empty Ovi Latent (audio + video)",
    "OviNativeGuider": "Ovi Guider (video/audio CFG + skip layer)",
    "OviNativeSigmas": "Ovi Sigmas (Ovi schedules)",
    "OviConditioningToNative": "Ovi Conditioning -> CONDITIONING",
    "OviModelToNative": "Ovi Model -> MODEL",
    "OviLatentsToNative": "Ovi Latents -> LATENT",
    "OviLatentsFromNative": "LATENT -> Ovi Latents",
    "OviNativeImageToAV": "Ovi Image to AV (native latent)",
    "OviNativeDecodeAudio": "Ovi Decode Audio (native latent)",
}
