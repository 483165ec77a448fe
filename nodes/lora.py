"""LoRA nodes: apply LoRAs to the fusion DiT, and train one from a folder of clips inside ComfyUI.

Merged into ``nodes/__init__.py`` through this file's ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time

from . import _comfy, _patcher
from ._types import OVI_AUDIO_VAE, OVI_MODEL, OVI_TEXT_ENCODER, OVI_VIDEO_VAE

logger = logging.getLogger(__name__)

LORA_FOLDER = "loras"
TARGET_CHOICES = {
    "all attention (paper)": ("self_attn", "cross_attn", "fusion"),
    "self + text cross": ("self_attn", "cross_attn"),
    "audio-video fusion only": ("fusion",),
    "self-attention only": ("self_attn",),
    "text cross-attention only": ("cross_attn",),
}
LOSS_TEXT_INTERVAL = 1.0  # seconds between loss texts on the training node
TOWER_CHOICES = {"both": ("video_model", "audio_model"), "video": ("video_model",), "audio": ("audio_model",)}


class OviLoraLoader:
    """Apply a LoRA to the Ovi fusion DiT (stack several by chaining loaders)."""

    @classmethod
    def INPUT_TYPES(cls):
        files = _comfy.list_models(LORA_FOLDER) or ["none"]
        return {
            "required": {
                "model": (OVI_MODEL, {"tooltip": "The fusion DiT from OviFusionModelLoader (or another LoRA loader)."}),
                "lora_name": (files, {"tooltip": "A LoRA for Ovi in models/loras (from OviTrainLoRA or "
                                                 "`python -m ovi_core train`)."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                       "tooltip": "How strongly the LoRA applies; 0 leaves the model unchanged."}),
            },
            "optional": {
                "towers": (["auto", "video", "audio", "both"], {
                    "default": "auto",
                    "tooltip": "Where the LoRA goes. auto: Ovi LoRAs to the towers they were trained on, Wan2.2-TI2V-5B "
                               "LoRAs (ComfyUI, diffusers or kohya naming) to the video tower."}),
            },
        }

    RETURN_TYPES = (OVI_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA applied (the loaded base model is unchanged).",)
    FUNCTION = "apply"
    SEARCH_ALIASES = ["load lora", "lora loader", "wan lora", "fastwan"]
    CATEGORY = "Ovi/lora"
    DESCRIPTION = ("Applies a LoRA (Ovi, or Wan2.2-TI2V-5B in ComfyUI/diffusers/kohya naming) to the Ovi DiT. The base "
                   "model is shared and unchanged; the LoRA is active only where this node's output is used.")

    def apply(self, model, lora_name, strength, towers="auto"):
        from ovi_core import validate
        from ovi_core.lora.model import lora_model

        if lora_name == "none" or float(strength) == 0.0:  # a NaN strength goes on to be refused
            return (model,)
        path = _comfy.model_path(LORA_FOLDER, lora_name)
        if path is None:
            raise FileNotFoundError(f"LoRA {lora_name!r} not found in the models/{LORA_FOLDER} folder.")
        # the strength, the file's values and its fit to this model (from the two headers), before it is applied
        model_files = [p for p in (getattr(model, "path", None), getattr(model, "audio_path", None)) if p]
        validate.check_plan(validate.Plan(loras=[validate.LoraRequest(path, strength, towers, what="LoRA")],
                                          model_files=model_files))
        view = lora_model(model.module, path, strength=float(strength), towers=towers)
        return (dataclasses.replace(model, module=view),)


class OviTrainLoRA:
    """Train a LoRA on a folder of clips (mp4/mov/mkv with audio + same-name .txt captions)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (OVI_MODEL, {"tooltip": "The fusion DiT to fine-tune (its weights stay frozen)."}),
                "dataset_folder": ("STRING", {
                    "default": "ovi_dataset",
                    "tooltip": "Folder of clips with same-name .txt captions in Ovi's prompt format, or a folder "
                               "already prepared (index.json). Relative paths are inside ComfyUI's input folder."}),
                "steps": ("INT", {"default": 500, "min": 1, "max": 100000, "tooltip": "Optimizer steps."}),
                "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1e-1, "step": 1e-5,
                                            "tooltip": "AdamW learning rate (after warm-up)."}),
                "rank": ("INT", {"default": 16, "min": 1, "max": 256, "tooltip": "LoRA rank (alpha = rank)."}),
                "targets": (list(TARGET_CHOICES), {
                    "default": "all attention (paper)",
                    "tooltip": "Which attention layers get LoRA (FFNs stay frozen, as in the paper)."}),
                "output_name": ("STRING", {"default": "ovi_lora",
                                           "tooltip": "File name of the LoRA in models/loras (no extension)."}),
            },
            "optional": {
                "text_encoder": (OVI_TEXT_ENCODER, {"tooltip": "Needed when the folder is not prepared yet."}),
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Needed when the folder is not prepared yet."}),
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "Needed when the folder is not prepared yet."}),
                "towers": (list(TOWER_CHOICES), {"default": "both", "tooltip": "Towers that get LoRA."}),
                "grad_accum": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": "Gradient accumulation."}),
                "warmup_steps": ("INT", {"default": 50, "min": 0, "max": 100000, "tooltip": "Linear LR warm-up."}),
                "save_every": ("INT", {"default": 250, "min": 0, "max": 100000,
                                       "tooltip": "Checkpoint interval (0: only the final file). A run with the "
                                                  "same output_name resumes from its last checkpoint."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True,
                                                       "tooltip": "Recompute activations: much less memory."}),
                "seed": ("INT", {"default": 42, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                                 "tooltip": "Training seed."}),
                "frames": ("INT", {"default": 0, "min": 0, "max": 241, "step": 4,
                                   "tooltip": "Frames per clip when preparing (4k+1); 0: the model's own length."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (OVI_MODEL, "STRING", "IMAGE")
    RETURN_NAMES = ("model", "lora_path", "loss_curve")
    OUTPUT_TOOLTIPS = ("The model with the newly trained LoRA applied.", "Path of the saved LoRA file (.safetensors).",
                       "The training loss per step, drawn as an image.")
    FUNCTION = "train"
    SEARCH_ALIASES = ["train lora", "lora training", "fine-tune", "finetune"]
    CATEGORY = "Ovi/lora"
    OUTPUT_NODE = True
    DESCRIPTION = ("Fine-tunes LoRA adapters on the attention layers with the paper's joint flow-matching loss "
                   "(0.85 video + 0.15 audio). Outputs the model with the new LoRA, its path and the loss curve.")

    def train(self, model, dataset_folder, steps, learning_rate, rank, targets, output_name, text_encoder=None,
              video_vae=None, audio_vae=None, towers="both", grad_accum=1, warmup_steps=50, save_every=250,
              gradient_checkpointing=True, seed=42, frames=0, unique_id=None):
        import torch

        from ovi_core import sizes
        from ovi_core.lora.model import lora_model
        from ovi_core.training.config import TrainConfig
        from ovi_core.training.dataset import INDEX_FILE, dataset_requirements, find_clips, prepare_dataset
        from ovi_core.training.plot import loss_curve_image
        from ovi_core.training.trainer import Trainer

        if targets not in TARGET_CHOICES:
            raise ValueError(f"targets must be one of {list(TARGET_CHOICES)}, got {targets!r}.")
        name = (output_name or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9_.\- ]+", name) or name.startswith("."):
            raise ValueError(f"output_name {output_name!r} must be a plain file name (letters, digits, _ - . space).")
        folder = dataset_folder if os.path.isabs(dataset_folder) else os.path.join(_comfy.input_dir(), dataset_folder)
        spec = sizes.MODEL_SPECS.get(model.version, sizes.MODEL_SPECS["1.0"])
        prepared = os.path.isfile(os.path.join(folder, INDEX_FILE))
        if not os.path.isdir(folder) or not (prepared or find_clips(folder)):
            pcfg = _prepare_config(model, spec, frames)
            what = "does not exist" if not os.path.isdir(folder) else "holds no clips and no index.json"
            raise FileNotFoundError(
                f"Dataset folder {folder!r} {what}. Relative paths are inside ComfyUI's input folder "
                f"({_comfy.input_dir()}); copy the example folder there or give an absolute path. "
                f"{dataset_requirements(pcfg)}")
        run_dir = os.path.join(_comfy.output_dir(), "ovi_lora_training", name)
        os.makedirs(run_dir, exist_ok=True)
        data_dir = folder
        note = ""
        if not prepared:
            if text_encoder is None or video_vae is None or audio_vae is None:
                raise ValueError("The dataset folder is not prepared yet: connect text_encoder, video_vae and "
                                 "audio_vae so the clips can be encoded (or prepare it with "
                                 "`python -m ovi_core prepare-dataset`).")
            pcfg = _prepare_config(model, spec, frames)
            data_dir = os.path.join(run_dir, "latents")
            bar = _comfy.progress_bar(1, node_id=unique_id)
            with _patcher.use_all(text_encoder, video_vae, audio_vae) as (te, vae, codec):
                rep = prepare_dataset(folder, data_dir, video_vae=vae, audio_codec=codec, text_encoder=te,
                                      config=pcfg, device=video_vae.device, progress=bar)
            if rep.skipped:
                note = "Ovi: skipped clips: " + "; ".join(f"{s['file']} ({s['reason']})" for s in rep.skipped)
                _comfy.show_text(unique_id, note)
        lora_dir = (_comfy.model_dirs(LORA_FOLDER) or [run_dir])[0]
        cfg = TrainConfig(
            dataset=data_dir, model=model.path or "model", output_dir=run_dir, output_name=name,
            model_version=model.version, steps=int(steps), learning_rate=float(learning_rate), rank=int(rank),
            targets=TARGET_CHOICES[targets], towers=TOWER_CHOICES.get(towers, TOWER_CHOICES["both"]),
            grad_accum=int(grad_accum), warmup_steps=int(warmup_steps), save_every=int(save_every),
            gradient_checkpointing=bool(gradient_checkpointing), seed=int(seed),
            mixed_precision="bf16" if model.dtype == torch.bfloat16 else "no",
        )
        bar = _comfy.progress_bar(int(steps), node_id=unique_id)
        # ComfyUI runs nodes under torch.inference_mode; training needs autograd back
        with torch.inference_mode(False), torch.enable_grad(), _patcher.use(model) as dit:
            trainer = Trainer(cfg, model=dit, progress=_loss_progress(bar, unique_id, note),
                              check_interrupt=_comfy.check_interrupt)
            try:
                res = trainer.train()
            finally:
                trainer.close()
        os.makedirs(lora_dir, exist_ok=True)
        final = os.path.join(lora_dir, name + ".safetensors")
        if os.path.abspath(res.lora_path) != os.path.abspath(final):
            os.replace(res.lora_path, final)
        curve = loss_curve_image(res.losses)
        trained = dataclasses.replace(model, module=lora_model(model.module, final, strength=1.0))
        logger.info("Ovi: LoRA %s trained for %d steps (last loss %.4f)", final, res.steps,
                    res.losses[-1] if res.losses else float("nan"))
        return (trained, final, curve)


def _prepare_config(model, spec, frames: int):
    """How the node prepares raw clips for ``model``: its own length unless ``frames`` is given."""
    from ovi_core.training.dataset import PrepareConfig

    return PrepareConfig(frames=int(frames) or spec.frames, area=int(model.target_area),
                         audio_tokens=None if frames else spec.audio_latent_length, version=model.version)


def _loss_progress(bar, node_id, note: str = "", *, interval: float = LOSS_TEXT_INTERVAL, clock=time.monotonic):
    """The trainer's ``progress(step, total, loss)``: drives the progress bar every step and shows "step N/M, loss
    X" on the node at most every ``interval`` seconds (and always the first and last step), under ``note``."""
    last = [None]

    def update(step: int, total: int, loss: float) -> None:
        bar(step, total)
        now = clock()
        if step in (1, total) or last[0] is None or now - last[0] >= interval:
            last[0] = now
            text = f"step {step}/{total}, loss {loss:.4f}"
            _comfy.show_text(node_id, f"{note}\n{text}" if note else text, level=logging.DEBUG)

    return update


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "OviLoraLoader": OviLoraLoader,
    "OviTrainLoRA": OviTrainLoRA,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "OviLoraLoader": "Ovi LoRA Loader",
    "OviTrainLoRA": "Ovi Train LoRA",
}
