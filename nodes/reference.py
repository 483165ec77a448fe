"""OviReference: one person's face (IMAGE) and voice (AUDIO) -> OVI_REFERENCES for OviJointSampler (reference mode,
DreamID-Omni). Chain two nodes for two people."""

from __future__ import annotations

from . import _patcher
from ._types import OVI_AUDIO_VAE, OVI_REFERENCES, OVI_VIDEO_VAE, ReferenceItem

MAX_PEOPLE = 2


class OviReference:
    """A face picture and a voice recording of one person; the voice is encoded here, the face by the sampler at the
    clip's size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE from OviVideoVAELoader: the sampler encodes the "
                                                         "face with it at the clip's size."}),
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE + BigVGAN from OviAudioVAELoader: encodes the "
                                                         "voice."}),
                "image": ("IMAGE", {"tooltip": "The person's face (first image of a batch). Fitted into the clip's "
                                               "size on a white canvas, keeping its aspect."}),
                "audio": ("AUDIO", {"tooltip": "The person's voice, at least 2 s: seconds 1-2 are used (mixed to "
                                               "mono, 16 kHz), as DreamID-Omni does."}),
            },
            "optional": {
                "references": (OVI_REFERENCES, {"tooltip": "Person 1 from another OviReference, to make this one "
                                                           "person 2 (at most 2 people)."}),
            },
        }

    RETURN_TYPES = (OVI_REFERENCES,)
    RETURN_NAMES = ("references",)
    OUTPUT_TOOLTIPS = ("The incoming people plus this one; connect to OviJointSampler's references (reference mode: "
                       "use a DreamID-Omni fusion model; with Ovi 1.x weights it is experimental).",)
    FUNCTION = "encode"
    CATEGORY = "Ovi/references"
    SEARCH_ALIASES = ["dreamid", "dreamid omni", "face reference", "voice reference", "identity", "reference to video"]
    DESCRIPTION = ("Face + voice reference of one person (DreamID-Omni reference -> audio+video). In the prompt, "
                   "person 1 is <img1>/<sub1>, person 2 <img2>/<sub2>; speech in <S>...<E>.")

    def encode(self, video_vae, audio_vae, image, audio, references=None):
        from ovi_core.conditioning.reference_in import SAMPLE_RATE, voice_samples

        people = list(references or [])
        if len(people) >= MAX_PEOPLE:
            raise ValueError(f"at most {MAX_PEOPLE} people: this OviReference already gets {len(people)} from its "
                             "references input; remove one")
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise ValueError("audio must be a ComfyUI AUDIO (a dict with waveform [B, C, T] and sample_rate).")
        if image is None or image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise ValueError("image must be a ComfyUI IMAGE [B, H, W, 3].")
        face = (image[0] if image.ndim == 4 else image).detach().cpu().float()
        samples = voice_samples(audio["waveform"], int(audio["sample_rate"]), name=f"voice of person {len(people) + 1}")
        with _patcher.use(audio_vae) as codec:
            voice = codec.encode(samples[None].to(audio_vae.device), SAMPLE_RATE).float().cpu()  # [1, 31, 20]
        return (people + [ReferenceItem(face=face, voice=voice, video_vae=video_vae)],)


def encode_references(items, *, height: int, width: int, video_ref_scale: float, audio_ref_scale: float):
    """OVI_REFERENCES -> :class:`ovi_core.sampling.reference.References` with the faces fitted and encoded at the
    clip's ``height x width`` (each with the Wan2.2 VAE its node was given)."""
    import torch

    from ovi_core.conditioning.reference_in import fit_face
    from ovi_core.sampling.reference import References

    faces = []
    for item in items:
        with _patcher.use(item.video_vae) as vae, torch.no_grad():
            pixels = fit_face(item.face, height, width).to(device=item.video_vae.device, dtype=item.video_vae.dtype)
            faces.append(vae.encode(pixels).float().cpu())
    return References(faces, [item.voice for item in items], video_ref_scale=float(video_ref_scale),
                      audio_ref_scale=float(audio_ref_scale))


NODE_CLASS_MAPPINGS = {"OviReference": OviReference}
NODE_DISPLAY_NAME_MAPPINGS = {"OviReference": "Ovi Reference (face + voice)"}
