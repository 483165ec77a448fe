"""Decoders: video latents -> IMAGE frames, audio latents -> AUDIO waveform."""

from __future__ import annotations

from . import _comfy, _patcher
from ._types import OVI_AUDIO_VAE, OVI_GUIDES, OVI_LATENTS, OVI_VIDEO_VAE

_ORIGINAL_TIP = ("Optional: the guides given to the sampler. Where they hold your own {what}, the output carries "
                 "the original instead of its VAE round trip; leave empty to get the decoded {what}.")


def _sources(guides) -> list:
    return [item.source for item in guides or [] if getattr(item, "source", None) is not None]


class OviDecodeVideo:
    """Wan2.2 VAE decode of the video latents (tiled) -> frames [F, H, W, 3] in [0, 1]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE from OviVideoVAELoader."}),
                "latents": (OVI_LATENTS, {"tooltip": "Paired latents from OviJointSampler or OviLoadLatents."}),
                "tile_size": ("INT", {
                    "default": 0, "min": 0, "max": 256, "step": 4,
                    "tooltip": "Spatial tile size in latent pixels (x16 = image pixels) for decoding with less "
                               "memory; 0 decodes without tiling unless the free memory is too small for that "
                               "(the node then says it tiled)."}),
            },
            "optional": {"guides": (OVI_GUIDES, {"tooltip": _ORIGINAL_TIP.format(what="frames")})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Decoded frames [F, H, W, 3] in [0, 1] at 24 fps; to OviSaveVideo or any IMAGE node.",)
    FUNCTION = "decode"
    SEARCH_ALIASES = ["vae decode", "video decode", "latents to frames"]
    CATEGORY = "Ovi/decode"
    DESCRIPTION = "Decodes Ovi's video latents into frames (24 fps)."

    def decode(self, video_vae, latents, tile_size, guides=None, unique_id=None):
        from ovi_core.pipeline import decode_video

        progress = _comfy.progress_bar(1, node_id=unique_id)
        with _patcher.use(video_vae) as vae:
            frames, plan = decode_video(vae, latents.video, device=video_vae.device, dtype=video_vae.dtype,
                                        tile_latent=int(tile_size) or None, progress=progress, return_plan=True)
        if plan.tiled:  # say on the node when memory (or tile_size) made it tile: tiles can leave faint seams
            _comfy.show_text(unique_id, f"Ovi: {plan.message()}")
        if guides:
            from ovi_core.conditioning.apply import splice_originals

            frames, _ = splice_originals([s for s in _sources(guides) if s.stream == "video"], frames, None)
        return (frames,)


class OviDecodeAudio:
    """MMAudio VAE + BigVGAN decode of the audio latents -> AUDIO at 16 kHz."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE + BigVGAN from OviAudioVAELoader."}),
                "latents": (OVI_LATENTS, {"tooltip": "Paired latents from OviJointSampler or OviLoadLatents."}),
            },
            "optional": {"guides": (OVI_GUIDES, {"tooltip": _ORIGINAL_TIP.format(what="sound")})},
        }

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The decoded sound track (16 kHz mono AUDIO); to OviSaveVideo or any AUDIO node.",)
    FUNCTION = "decode"
    SEARCH_ALIASES = ["audio vae decode", "vocoder", "latents to audio"]
    CATEGORY = "Ovi/decode"
    DESCRIPTION = "Decodes Ovi's audio latents into a 16 kHz mono waveform (ComfyUI AUDIO)."

    def decode(self, audio_vae, latents, guides=None):
        from ovi_core.pipeline import SAMPLE_RATE, decode_audio

        with _patcher.use(audio_vae) as codec:
            wav = decode_audio(codec, latents.audio, device=audio_vae.device, dtype=audio_vae.dtype)  # [1, T]
        if guides:
            from ovi_core.conditioning.apply import splice_originals

            _, wav = splice_originals([s for s in _sources(guides) if s.stream == "audio"], None, wav)
        rate = getattr(audio_vae.module, "sample_rate", SAMPLE_RATE)
        return ({"waveform": wav.unsqueeze(0), "sample_rate": int(rate)},)  # [1, 1, T]
