"""``OviGuider``: ComfyUI's CFGGuider with Ovi's per-stream guidance (imported only inside ComfyUI)."""

from __future__ import annotations

import comfy.model_patcher
import comfy.samplers
import comfy.utils

from ovi_core.sampling import packed

from .model import AUDIO_CONTEXT_KEY, SLG_KEY


def with_audio_negative(negative: list, audio_negative: list) -> list:
    """``negative`` with the first embedding of ``audio_negative`` as its audio-tower text."""
    emb = audio_negative[0][0]
    return [[t, {**opts, AUDIO_CONTEXT_KEY: emb}] for t, opts in negative]


class OviGuider(comfy.samplers.CFGGuider):
    """Positive and negative in one batched call (when memory allows); the negative rows skip fused layer
    ``slg_layer``; then ``uncond + scale * (cond - uncond)`` with ``video_cfg`` on the video part and ``audio_cfg``
    on the audio part of the packed latent."""

    def __init__(self, model_patcher, *, video_cfg: float, audio_cfg: float, slg_layer: int) -> None:
        super().__init__(model_patcher)
        self.video_cfg, self.audio_cfg, self.slg_layer = video_cfg, audio_cfg, slg_layer
        self.cfg = video_cfg

    def _audio_start(self, x):
        """Index (along dim 2 of the packed latent) where the audio part begins."""
        shapes = getattr(self.inner_model, "latent_shapes", None)
        if shapes is not None and len(shapes) > 1 and x.ndim == 3:
            return 2, shapes[0][1:].numel()
        return 2, packed.video_frames(x) if x.ndim == 5 else x.shape[2]

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006
        positive, negative = self.conds.get("positive"), self.conds.get("negative")
        if self.video_cfg == 1 and self.audio_cfg == 1 or negative is None:
            return comfy.samplers.calc_cond_batch(self.inner_model, [positive], x, timestep, model_options)[0]
        opts = comfy.model_patcher.create_model_options_clone(model_options)
        if self.slg_layer > 0:
            opts.setdefault("transformer_options", {})[SLG_KEY] = self.slg_layer
        cond, uncond = comfy.samplers.calc_cond_batch(self.inner_model, [positive, negative], x, timestep, opts)
        out = uncond + (cond - uncond) * self.video_cfg
        dim, start = self._audio_start(x)
        a = slice(start, None)
        idx = (slice(None),) * dim + (a,)
        out[idx] = uncond[idx] + (cond[idx] - uncond[idx]) * self.audio_cfg
        return out
