"""Guide nodes: a given sound, given frames or a redo range -> OVI_GUIDES for OviJointSampler (and the decoders).

Each node appends to an optional incoming OVI_GUIDES list, so several guides chain into one sampler input.
"""

from __future__ import annotations

from . import _patcher
from ._types import OVI_AUDIO_VAE, OVI_GUIDES, OVI_LATENTS, OVI_MODEL, OVI_VIDEO_VAE, GuideItem

MODES = ["replace", "clean"]
SECONDS = ["auto", "5", "10"]

_MODE_TIP = ("replace (default): the given part is noised to each step's level with one fixed noise draw (the "
             "flow-matching forward process), so the model sees one joint state at one timestep, as in training. "
             "clean: its tokens get timestep 0 and stay clean, as image->AV's first frame. Ovi was not trained "
             "for either; both are training-free.")
_UNTIL_TIP = ("replace mode: enforce the given part during this fraction of the steps only (1.0 = all steps, and "
              "the result equals it exactly); clean mode needs 1.0.")
_SECONDS_TIP = "Clip length the guide is made for; must match the sampler's seconds (auto: the model's own)."
_CHAIN_TIP = "Optional guides to add this one to (chain several guide nodes into one sampler input)."


def _version(model, seconds: str) -> str:
    from .sampling import OviJointSampler

    return OviJointSampler.spec_version(model.version, str(seconds))


class OviAudioGuide:
    """AUDIO (any rate, mono/stereo) at an offset -> audio guide (MMAudio VAE latent + mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE + BigVGAN from OviAudioVAELoader (encodes the "
                                                         "sound)."}),
                "model": (OVI_MODEL, {"tooltip": "The fusion model; its version fixes the clip's length."}),
                "audio": ("AUDIO", {"tooltip": "The sound the clip must carry (e.g. from LoadAudio): any sample "
                                               "rate, mono or stereo; mixed to mono and resampled to 16 kHz."}),
                "offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                     "tooltip": "Where the sound starts in the clip, seconds. Before and after "
                                                "it the sound track is generated."}),
                "mode": (MODES, {"default": "replace", "tooltip": _MODE_TIP}),
                "until": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": _UNTIL_TIP}),
                "seconds": (SECONDS, {"default": "auto", "tooltip": _SECONDS_TIP}),
            },
            "optional": {"guides": (OVI_GUIDES, {"tooltip": _CHAIN_TIP})},
        }

    RETURN_TYPES = (OVI_GUIDES,)
    RETURN_NAMES = ("guides",)
    FUNCTION = "encode"
    CATEGORY = "Ovi/guides"
    DESCRIPTION = ("Audio -> video: the clip carries this sound (lip-sync to a voice line). A sound longer than the "
                   "clip is refused with the maximum.")

    def encode(self, audio_vae, model, audio, offset, mode, until, seconds, guides=None):
        from ovi_core.conditioning.audio_in import encode_audio_guide

        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise ValueError("audio must be a ComfyUI AUDIO (a dict with waveform [B, C, T] and sample_rate).")
        with _patcher.use(audio_vae) as codec:
            inp, guide = encode_audio_guide(codec, audio["waveform"], int(audio["sample_rate"]),
                                            version=_version(model, seconds), offset=float(offset), mode=mode,
                                            until=float(until), device=audio_vae.device)
        return (list(guides or []) + [GuideItem(guide=guide, source=inp)],)


class OviVideoGuide:
    """IMAGE frames + fps, or a VIDEO -> video guide (Wan2.2 VAE latent + per-frame mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE from OviVideoVAELoader (encodes the frames)."}),
                "model": (OVI_MODEL, {"tooltip": "The fusion model; its version and area fix the clip's length "
                                                 "and size."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of the images (ignored for a VIDEO, which carries its "
                                             "own); converted to Ovi's 24 fps."}),
                "mode": (MODES, {"default": "replace", "tooltip": _MODE_TIP}),
                "until": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": _UNTIL_TIP}),
                "seconds": (SECONDS, {"default": "auto", "tooltip": _SECONDS_TIP}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames [N, H, W, 3] the clip must show (video -> audio). Resized "
                                                "to the model's area keeping the aspect; the clip takes this size. "
                                                "Fewer frames than the clip: the rest is generated."}),
                "video": ("VIDEO", {"tooltip": "A VIDEO (e.g. from LoadVideo) instead of images; its frames and "
                                               "frame rate are used."}),
                "guides": (OVI_GUIDES, {"tooltip": _CHAIN_TIP}),
            },
        }

    RETURN_TYPES = (OVI_GUIDES,)
    RETURN_NAMES = ("guides",)
    FUNCTION = "encode"
    CATEGORY = "Ovi/guides"
    DESCRIPTION = ("Video -> audio: the clip shows these frames and the model makes the sound for them. A video "
                   "longer than the clip, or of a size that does not fit the model, is refused.")

    def encode(self, video_vae, model, fps, mode, until, seconds, images=None, video=None, guides=None):
        from ovi_core.conditioning.video_in import encode_video_guide

        if (images is None) == (video is None):
            raise ValueError("connect either images (with fps) or a video to OviVideoGuide, not both or neither.")
        if video is not None:
            if not hasattr(video, "get_components"):
                raise ValueError("video must be a ComfyUI VIDEO (from LoadVideo or CreateVideo).")
            comp = video.get_components()
            images, fps = comp.images, float(comp.frame_rate)
        with _patcher.use(video_vae) as vae:
            inp, guide = encode_video_guide(vae, images, float(fps), version=_version(model, seconds),
                                            area=model.target_area, mode=mode, until=float(until),
                                            device=video_vae.device)
        return (list(guides or []) + [GuideItem(guide=guide, source=inp)],)


class OviRedoGuide:
    """Saved/sampled latents + a time range of one stream -> guides that keep everything else."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latents": (OVI_LATENTS, {"tooltip": "The clip to redo a part of (OviLoadLatents or a sampler)."}),
                "stream": (["audio", "video"], {"default": "audio", "tooltip": "Which stream's range is redone; "
                                                                            "the other is kept whole."}),
                "start": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                    "tooltip": "Start of the range to regenerate, seconds."}),
                "end": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 10.0, "step": 0.01,
                                  "tooltip": "End of the range to regenerate, seconds (every latent touching the "
                                             "range is redone)."}),
                "mode": (MODES, {"default": "replace", "tooltip": _MODE_TIP}),
            },
            "optional": {"guides": (OVI_GUIDES, {"tooltip": _CHAIN_TIP})},
        }

    RETURN_TYPES = (OVI_GUIDES,)
    RETURN_NAMES = ("guides",)
    FUNCTION = "encode"
    CATEGORY = "Ovi/guides"
    DESCRIPTION = "Redo a time range of audio or video of a clip and keep the rest (use the same seconds setting)."

    def encode(self, latents, stream, start, end, mode, guides=None):
        from ovi_core.conditioning.redo import redo_latents_guides

        made = redo_latents_guides(latents.video, latents.audio, stream=stream, start=float(start), end=float(end),
                                   mode=mode)
        return (list(guides or []) + [GuideItem(guide=g, source=None) for g in made],)


NODE_CLASS_MAPPINGS = {"OviAudioGuide": OviAudioGuide, "OviVideoGuide": OviVideoGuide, "OviRedoGuide": OviRedoGuide}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OviAudioGuide": "Ovi Audio Guide (bring your own sound)",
    "OviVideoGuide": "Ovi Video Guide (bring your own frames)",
    "OviRedoGuide": "Ovi Redo Range",
}
