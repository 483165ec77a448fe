"""Reference mode (DreamID-Omni reference-to-audio+video): given faces and voices speak and act in a new clip.

DreamID-Omni (``Guoxu1233/DreamID-Omni``, ``dreamid_omni_engine.py``) is a checkpoint of the Ovi fusion model. It
appends each face (one VAE latent frame) after the clip's video latent frames and each voice (about 31 MMAudio
latents, seconds 1-2 of the WAV) after the clip's audio latents, holds them at their clean latents before every
step, and runs four passes per step:

* pos: the prompt for both towers, references present;
* neg: the video negative / audio negative prompts (no skip-layer guidance);
* video-ref-neg: the positive prompt with the face latents zeroed;
* audio-ref-neg: the positive prompt with the voice latents zeroed;

``v = neg + 3.0 (pos - neg) + 1.5 (pos - v_refneg)`` and ``a = neg + 4.0 (pos - neg) + 2.0 (pos - a_refneg)``.

Here the tails are guides on extra positions (:class:`~ovi_core.sampling.guides.Guide` mode ``reference``: held
at ``x0``, shared timestep) in the one joint sampler, the rotary offsets come from the model
(``references=`` :class:`~ovi_core.model.ref_rope.RefLayout`), and :func:`make_reference_denoiser` is the
four-pass guidance. Other guides (a given sound or frames) extend to the longer streams unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ovi_core.model.ref_rope import RefLayout
from ovi_core.sampling.guides import Guide
from ovi_core.sampling.joint import Context, Denoiser, _ctx_batch, _ctx_cat

MAX_PEOPLE = 2
#: DreamID-Omni's ``inference_r2av.yaml``
DEFAULTS = {"video_guidance_scale": 3.0, "audio_guidance_scale": 4.0, "video_ref_guidance_scale": 1.5,
            "audio_ref_guidance_scale": 2.0, "steps": 50, "solver": "unipc", "shift": 5.0,
            "video_negative_prompt": "jitter, bad hands, blur, distortion",
            "audio_negative_prompt": "robotic, muffled, echo, distorted"}


EXPERIMENTAL = ("reference mode without a DreamID-Omni fusion file (dreamid_omni*.safetensors) is experimental: Ovi "
                "1.x was not trained for face and voice references")


def is_dreamid(path: str) -> bool:
    """Whether a fusion file's name says DreamID-Omni (its tensors have Ovi's names and shapes, so only the name
    tells them apart)."""
    return "dreamid" in os.path.basename(str(path)).lower()


@dataclass(frozen=True)
class References:
    """Encoded face and voice references and the two reference guidance scales.

    Attributes:
        faces: one clean video latent ``[1, 48, 1, h, w]`` per person (at the clip's latent size), in order.
        voices: one clean audio latent ``[1, La_j, 20]`` per person, in order (face ``j`` and voice ``j`` get
            aligned rotary positions).
        video_ref_scale: weight of ``pos - v_refneg`` (1.5 in DreamID-Omni); 0 skips that pass.
        audio_ref_scale: weight of ``pos - a_refneg`` (2.0); 0 skips that pass.
    """

    faces: tuple[torch.Tensor, ...]
    voices: tuple[torch.Tensor, ...]
    video_ref_scale: float = DEFAULTS["video_ref_guidance_scale"]
    audio_ref_scale: float = DEFAULTS["audio_ref_guidance_scale"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "faces", tuple(self.faces))
        object.__setattr__(self, "voices", tuple(self.voices))
        if not 1 <= len(self.faces) <= MAX_PEOPLE or not 1 <= len(self.voices) <= MAX_PEOPLE:
            raise ValueError(f"references need 1 to {MAX_PEOPLE} faces and 1 to {MAX_PEOPLE} voices, got "
                             f"{len(self.faces)} and {len(self.voices)}")
        for j, f in enumerate(self.faces):
            if not isinstance(f, torch.Tensor) or f.ndim != 5 or f.shape[0] != 1 or f.shape[2] != 1:
                raise ValueError(f"face reference {j} must be a latent [1, 48, 1, h, w], got "
                                 f"{tuple(getattr(f, 'shape', ()))}")
            if f.shape[1:] != self.faces[0].shape[1:]:
                raise ValueError(f"face references must share one latent size, got {tuple(self.faces[0].shape)} "
                                 f"and {tuple(f.shape)}")
        for j, v in enumerate(self.voices):
            if not isinstance(v, torch.Tensor) or v.ndim != 3 or v.shape[0] != 1 or v.shape[1] < 1:
                raise ValueError(f"voice reference {j} must be a latent [1, La, 20], got "
                                 f"{tuple(getattr(v, 'shape', ()))}")
        for name in ("video_ref_scale", "audio_ref_scale"):
            val = float(getattr(self, name))
            if not 0.0 <= val <= 20.0:
                raise ValueError(f"{name} must be in [0, 20], got {val}")

    @property
    def layout(self) -> RefLayout:
        """The model's reference layout (DreamID-Omni's offsets)."""
        return RefLayout.dreamid(len(self.faces), [v.shape[1] for v in self.voices])

    @property
    def video_frames(self) -> int:
        return len(self.faces)

    @property
    def audio_length(self) -> int:
        return sum(v.shape[1] for v in self.voices)

    def extend_noise(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the tail positions (zeros: the guides set them before every step) to ``video [B, 48, F, h, w]``
        and ``audio [B, L, 20]``."""
        self.check_size(video.shape)
        vt = video.new_zeros((*video.shape[:2], self.video_frames, *video.shape[3:]))
        at = audio.new_zeros((audio.shape[0], self.audio_length, audio.shape[2]))
        return torch.cat([video, vt], dim=2), torch.cat([audio, at], dim=1)

    def strip(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clip without the reference tails."""
        return video[:, :, : video.shape[2] - self.video_frames], audio[:, : audio.shape[1] - self.audio_length]

    def check_size(self, video_shape: Sequence[int]) -> None:
        """Raise ``ValueError`` unless the faces have the clip's latent size ``[.., 48, F, h, w]``."""
        want = (video_shape[1], video_shape[3], video_shape[4])
        got = (self.faces[0].shape[1], self.faces[0].shape[3], self.faces[0].shape[4])
        if got != want:
            raise ValueError(f"face reference latents are [48, h, w] = {list(got)} but the clip's latent is "
                             f"{list(want)}; encode the faces at the output size")

    def guides(self, video_shape: Sequence[int], audio_shape: Sequence[int]) -> list[Guide]:
        """The two ``reference`` guides on the EXTENDED streams (``video_shape``/``audio_shape`` include the
        tails): faces on the last frames, voices on the last positions."""
        f, la = video_shape[2], audio_shape[1]
        vlat = torch.zeros((1, *video_shape[1:]), dtype=torch.float32)
        vlat[:, :, f - self.video_frames:] = torch.cat([x.float().cpu() for x in self.faces], dim=2)
        vmask = torch.zeros(f, dtype=torch.bool)
        vmask[f - self.video_frames:] = True
        alat = torch.zeros((1, la, audio_shape[2]), dtype=torch.float32)
        alat[:, la - self.audio_length:] = torch.cat([x.float().cpu() for x in self.voices], dim=1)
        amask = torch.zeros(la, dtype=torch.bool)
        amask[la - self.audio_length:] = True
        return [Guide("video", vlat, vmask, "reference"), Guide("audio", alat, amask, "reference")]

    def extend_guide(self, g: Guide) -> Guide:
        """A guide over the clip, padded to the extended stream (tail: not masked)."""
        if g.stream == "video":
            lat = torch.cat([g.latent, g.latent.new_zeros((*g.latent.shape[:2], self.video_frames,
                                                           *g.latent.shape[3:]))], dim=2)
            pad = g.mask.new_zeros((self.video_frames, *g.mask.shape[1:]))
        else:
            lat = torch.cat([g.latent, g.latent.new_zeros((g.latent.shape[0], self.audio_length,
                                                           g.latent.shape[2]))], dim=1)
            pad = g.mask.new_zeros(self.audio_length)
        return Guide(g.stream, lat, torch.cat([g.mask, pad]), g.mode, g.until)

    def extend_clean(self, video_clean: torch.Tensor | None, audio_clean: torch.Tensor | None):
        """Clean-token masks over the clip (``[B|1, F(, h, w)]``, ``[B|1, L]``) padded with False for the tails."""
        if video_clean is not None:
            pad = video_clean.new_zeros((video_clean.shape[0], self.video_frames, *video_clean.shape[2:]))
            video_clean = torch.cat([video_clean, pad], dim=1)
        if audio_clean is not None:
            audio_clean = torch.cat([audio_clean, audio_clean.new_zeros((audio_clean.shape[0], self.audio_length))],
                                    dim=1)
        return video_clean, audio_clean


def make_reference_denoiser(
    model_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    *,
    layout: RefLayout,
    pos_video_ctx: Context,
    pos_audio_ctx: Context,
    neg_video_ctx: Context,
    neg_audio_ctx: Context,
    video_guidance_scale: float = DEFAULTS["video_guidance_scale"],
    audio_guidance_scale: float = DEFAULTS["audio_guidance_scale"],
    video_ref_scale: float = DEFAULTS["video_ref_guidance_scale"],
    audio_ref_scale: float = DEFAULTS["audio_ref_guidance_scale"],
    batch_cfg: bool = True,
    video_clean: torch.Tensor | None = None,
    audio_clean: torch.Tensor | None = None,
) -> Denoiser:
    """The four-pass reference guidance as ``denoise(video, audio, t) -> (v_video, v_audio)``.

    ``model_fn(video, audio, t, video_ctx, audio_ctx, *, references, [video_clean, audio_clean])`` is the fusion
    DiT (video ``[B, 48, F+R, h, w]``, audio ``[B, L+T, 20]``, the reference tails last as ``layout`` says).
    Per step: pos, neg, video-ref-neg (faces zeroed), audio-ref-neg (voices zeroed), combined as
    ``v = neg + gv (pos - neg) + rv (pos - v_refneg)``, ``a = neg + ga (pos - neg) + ra (pos - a_refneg)``, in
    that order of operations (DreamID-Omni's). A reference scale of 0 skips its pass. With ``batch_cfg`` the passes
    run as one batch of ``k * B`` rows (pos, neg, video-ref-neg, audio-ref-neg); otherwise one call each.
    """
    gv, ga, rv, ra = (float(x) for x in (video_guidance_scale, audio_guidance_scale, video_ref_scale,
                                        audio_ref_scale))
    masks = {k: m for k, m in (("video_clean", video_clean), ("audio_clean", audio_clean)) if m is not None}
    built: dict[int, tuple] = {}

    def contexts(batch: int):
        if batch not in built:
            pv, pa = _ctx_batch(pos_video_ctx, batch, "pos_video_ctx"), _ctx_batch(pos_audio_ctx, batch, "pos_audio_ctx")
            nv, na = _ctx_batch(neg_video_ctx, batch, "neg_video_ctx"), _ctx_batch(neg_audio_ctx, batch, "neg_audio_ctx")
            built[batch] = (pv, pa, nv, na)
        return built[batch]

    def call(video, audio, t, vctx, actx, rows: int):
        kw = {}
        for k, m in masks.items():
            m = m.to(video.device)
            kw[k] = m if m.shape[0] == 1 else torch.cat([m] * rows)
        return model_fn(video, audio, t, vctx, actx, references=layout, **kw)

    def denoise(video: torch.Tensor, audio: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = video.shape[0]
        pv, pa, nv, na = contexts(b)
        f, la = video.shape[2], audio.shape[1]
        video0 = video.clone()
        video0[:, :, f - layout.video_frames:] = 0
        audio0 = audio.clone()
        audio0[:, la - layout.audio_total:] = 0
        passes = [(video, audio, pv, pa), (video, audio, nv, na)]
        if rv != 0:
            passes.append((video0, audio, pv, pa))
        if ra != 0:
            passes.append((video, audio0, pv, pa))
        if batch_cfg:
            vctx, actx = passes[0][2], passes[0][3]
            for p in passes[1:]:
                vctx, actx = _ctx_cat(vctx, p[2]), _ctx_cat(actx, p[3])
            v_all, a_all = call(torch.cat([p[0] for p in passes]), torch.cat([p[1] for p in passes]),
                                torch.cat([t] * len(passes)), vctx, actx, len(passes))
            outs = [(v_all[k * b:(k + 1) * b], a_all[k * b:(k + 1) * b]) for k in range(len(passes))]
        else:
            outs = [call(p[0], p[1], t, p[2], p[3], 1) for p in passes]
        (v_pos, a_pos), (v_neg, a_neg) = outs[0], outs[1]
        v = v_neg + gv * (v_pos - v_neg)
        a = a_neg + ga * (a_pos - a_neg)
        k = 2
        if rv != 0:
            v = v + rv * (v_pos - outs[k][0])
            k += 1
        if ra != 0:
            a = a + ra * (a_pos - outs[k][1])
        return v, a

    return denoise
