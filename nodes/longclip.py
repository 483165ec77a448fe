"""Long clips in ComfyUI: one node that samples chained windows and returns the latents of the whole clip."""

from __future__ import annotations

from . import _comfy, _patcher
from ._types import OVI_AUDIO_VAE, OVI_LATENTS, OVI_MODEL, OVI_TEXT_ENCODER, OVI_VIDEO_VAE
from .sampling import ASPECT_PRESETS, AUDIO_NEGATIVE, DEFAULT_PRESET, VIDEO_NEGATIVE

DEFAULT_PROMPTS = (
    "A woman in a green coat walks through a night market and says <S>Have you tried the dumplings here?<E> "
    "Audio: clear female voice, market chatter.\n"
    "---\n"
    "She stops at a stall, smiles at the vendor and says <S>Two of those, please.<E> "
    "Audio: clear female voice, sizzling pan, market chatter."
)


class OviLongClipSampler:
    """Chained windows, each guided at its start by the end of the previous one (picture and sound)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (OVI_MODEL, {"tooltip": "The fusion DiT from OviFusionModelLoader; its window (5 s or 10 s) "
                                                 "is chained."}),
                "text_encoder": (OVI_TEXT_ENCODER, {"tooltip": "UMT5-XXL from OviTextEncoderLoader (each window's "
                                                               "prompt is encoded here)."}),
                "prompts": ("STRING", {
                    "multiline": True, "default": DEFAULT_PROMPTS,
                    "tooltip": "One prompt per window: one per line, or blocks separated by a line '---'. One prompt "
                               "serves every window; fewer than windows: the last one carries on. Put each "
                               "window's speech in its own <S>...<E>."}),
                "seconds": ("FLOAT", {"default": 20.0, "min": 5.0, "max": 3600.0, "step": 0.5,
                                      "tooltip": "Clip length; the output has round(24 * seconds) + 1 frames."}),
                "aspect": (list(ASPECT_PRESETS), {"default": DEFAULT_PRESET,
                                                  "tooltip": "Frame shape, as on OviJointSampler."}),
                "width": ("INT", {"default": 1280, "min": 128, "max": 4096, "step": 32,
                                  "tooltip": "Width for the 'custom' aspect (rescaled to the model's area)."}),
                "height": ("INT", {"default": 704, "min": 128, "max": 4096, "step": 32,
                                   "tooltip": "Height for the 'custom' aspect (rescaled to the model's area)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200, "tooltip": "Sampling steps per window."}),
                "solver": (["unipc", "dpm++", "euler"], {"default": "unipc", "tooltip": "Flow-matching solver."}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 20.0, "step": 0.1,
                                    "tooltip": "Timestep shift (official 5.0)."}),
                "video_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Video guidance scale (official 4.0)."}),
                "audio_cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Audio guidance scale (official 3.0)."}),
                "slg_layer": ("INT", {"default": 11, "min": -1, "max": 63,
                                      "tooltip": "Skip-layer guidance block (official 11); -1 disables it."}),
                "seed": ("INT", {"default": 103, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of window 1; window k uses seed + k - 1."}),
            },
            "optional": {
                "overlap": ("FLOAT", {"default": 2.0, "min": 0.35, "max": 5.0, "step": 0.05,
                                      "tooltip": "Seconds of picture and sound carried from each window into the next "
                                                 "(whole latent frames; at most half a window)."}),
                "crossfade": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 4.0, "step": 0.05,
                                        "tooltip": "Seconds of the latent blend at each seam, inside the overlap."}),
                "guide_mode": (["replace", "clean"], {"default": "replace",
                                                      "tooltip": "How the carried part is held: replace (noised to "
                                                                 "each step's level) or clean (timestep 0)."}),
                "video_negative": ("STRING", {"multiline": True, "default": VIDEO_NEGATIVE,
                                              "tooltip": "Negative prompt of the video tower."}),
                "audio_negative": ("STRING", {"multiline": True, "default": AUDIO_NEGATIVE,
                                              "tooltip": "Negative prompt of the audio tower."}),
                "image": ("IMAGE", {"tooltip": "Optional first frame of window 1 (needs video_vae)."}),
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE, to encode the first frame."}),
                "audio": ("AUDIO", {"tooltip": "Optional sound track for the clip (e.g. a long voice recording): it "
                                               "guides every window it covers (needs audio_vae). At most the clip's "
                                               "length."}),
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE, to encode the audio track."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (OVI_LATENTS, "STRING")
    RETURN_NAMES = ("latents", "plan")
    FUNCTION = "sample"
    CATEGORY = "Ovi"
    DESCRIPTION = ("Long clips: chained windows that carry picture and sound across every seam; the latents of the "
                   "whole clip go to OviDecodeVideo / OviDecodeAudio.")

    def sample(self, model, text_encoder, prompts, seconds, aspect, width, height, steps, solver, shift, video_cfg,
               audio_cfg, slg_layer, seed, overlap=2.0, crossfade=0.5, guide_mode="replace",
               video_negative=VIDEO_NEGATIVE, audio_negative=AUDIO_NEGATIVE, image=None, video_vae=None, audio=None,
               audio_vae=None, unique_id=None):
        from ovi_core import sizes
        from ovi_core.longclip.job import prepare_audio
        from ovi_core.longclip.plan import plan_windows
        from ovi_core.longclip.prompts import encode_window_prompts, prompts_for_windows, split_prompts
        from ovi_core.longclip.runner import sample_long_clip
        from ovi_core.sampling.av import encode_image

        if aspect not in ASPECT_PRESETS:
            raise ValueError(f"Unknown aspect {aspect!r}; choose one of {list(ASPECT_PRESETS)}.")
        if image is not None and video_vae is None:
            raise ValueError("An image is connected but no video_vae: connect OviVideoVAELoader (the first frame is "
                             "encoded with the Wan2.2 VAE).")
        if audio is not None and audio_vae is None:
            raise ValueError("An audio track is connected but no audio_vae: connect OviAudioVAELoader.")
        plan = plan_windows(float(seconds), version=model.version, overlap_seconds=float(overlap),
                            crossfade_seconds=float(crossfade))
        window_prompts = prompts_for_windows(split_prompts(prompts), plan.num_windows)
        given = prepare_audio(audio["waveform"], int(audio["sample_rate"]), plan=plan) if audio is not None else None
        w, h = ASPECT_PRESETS[aspect] or (int(width), int(height))
        height_px, width_px = sizes.snap_hw_to_area(h, w, area=model.target_area)
        _comfy.show_text(unique_id, "Ovi long clip: " + plan.describe())

        with _patcher.use(text_encoder) as te:
            conds = encode_window_prompts(te, window_prompts, video_negative=video_negative,
                                          audio_negative=audio_negative, version=model.version)
        image_latent = given_latents = None
        if image is not None:
            with _patcher.use(video_vae) as vae:
                image_latent = encode_image(vae, image[0], area=model.target_area, device=video_vae.device,
                                            dtype=video_vae.dtype)
        if given is not None:
            with _patcher.use(audio_vae) as codec:
                given_latents = codec.encode(given.to(device=audio_vae.device, dtype=audio_vae.dtype), 16000)
            given_latents = given_latents.float().cpu()
        total = plan.num_windows * int(steps)
        bar = _comfy.progress_bar(total, node_id=unique_id)

        def progress(win, wins, step, n):
            bar((win - 1) * n + step, wins * n)

        with _patcher.use_model(model) as dit:
            latents = sample_long_clip(
                dit, conds, plan, height=height_px, width=width_px, steps=int(steps), solver=solver,
                shift=float(shift), video_guidance_scale=float(video_cfg), audio_guidance_scale=float(audio_cfg),
                slg_layer=int(slg_layer), seed=int(seed), image_latent=image_latent, given_audio=given_latents,
                guide_mode=guide_mode, device=model.device, dtype=model.dtype, progress=progress,
                check_interrupt=_comfy.check_interrupt,
            )
        return (latents, plan.describe())


NODE_CLASS_MAPPINGS = {"OviLongClipSampler": OviLongClipSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"OviLongClipSampler": "Ovi Long Clip Sampler (chained windows)"}
