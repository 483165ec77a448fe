"""The training configuration (one JSON file): what to train, on what, and how."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ovi_core.lora.targets import DEFAULT_TARGETS, TOWERS, LoRAConfig

TIMESTEP_SAMPLING = ("uniform", "logit_normal")
MIXED_PRECISION = ("no", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Fields of the JSON config of ``python -m ovi_core train CONFIG.json``.

    The loss is ``video_loss_weight * MSE(v_video) + audio_loss_weight * MSE(v_audio)`` on flow-matching
    velocity targets ``noise - clean`` at ``x_s = (1 - s) clean + s noise``, one ``s`` per sample shared by
    both towers, independent noises (Ovi paper, fusion training: 0.85 / 0.15).
    """

    dataset: str  # a prepared folder (index.json + latents)
    model: str  # fusion checkpoint (.safetensors), official or tiny
    output_dir: str
    output_name: str = "ovi_lora"
    model_version: str | None = None  # written into the LoRA metadata; None: from the checkpoint

    steps: int = 1000
    learning_rate: float = 1e-4
    rank: int = 16
    alpha: float | None = None  # None: = rank
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    towers: tuple[str, ...] = TOWERS

    batch_size: int = 1
    grad_accum: int = 1
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # after warm-up: constant, cosine or linear decay to 0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # <= 0 disables clipping

    video_loss_weight: float = 0.85
    audio_loss_weight: float = 0.15
    timestep_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    timestep_shift: float = 1.0  # s' = k s / (1 + (k - 1) s)

    mixed_precision: str = "bf16"  # base weights and activations in bf16 (LoRA weights stay fp32)
    gradient_checkpointing: bool = False
    seed: int = 42

    save_every: int = 250
    keep_checkpoints: int = 3
    resume: str | None = "auto"  # 'auto': latest checkpoint in output_dir; a path; or null
    validate_every: int = 0  # 0: never
    validation_sample: bool = False  # also sample latents with the first caption at each validation
    validation_steps: int = 20
    log_every: int = 1
    distributed: str = "ddp"  # 'ddp' or 'fsdp' (only matters under `accelerate launch`)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets) if not isinstance(self.targets, str)
                           else (self.targets,))
        object.__setattr__(self, "towers", tuple(self.towers) if not isinstance(self.towers, str) else (self.towers,))
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.save_every >= 0, "save_every must be >= 0 (0: only at the end)"),
            (self.timestep_sampling in TIMESTEP_SAMPLING, f"timestep_sampling must be one of {TIMESTEP_SAMPLING}"),
            (self.mixed_precision in MIXED_PRECISION, f"mixed_precision must be one of {MIXED_PRECISION}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.timestep_shift > 0, "timestep_shift must be > 0"),
            (self.video_loss_weight >= 0 and self.audio_loss_weight >= 0
             and self.video_loss_weight + self.audio_loss_weight > 0, "loss weights must be >= 0, not both 0"),
            (self.distributed in ("ddp", "fsdp"), "distributed must be 'ddp' or 'fsdp'"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"Training config: {msg}.")
        self.lora_config()  # validates rank, targets, towers

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig(rank=self.rank, alpha=self.alpha, dropout=self.dropout, targets=self.targets,
                          towers=self.towers)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, base_dir: str | None = None) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Training config: unknown fields {unknown}; known fields are {sorted(names)}.")
        for req in ("dataset", "model", "output_dir"):
            if req not in d:
                raise ValueError(f"Training config: the field {req!r} is required.")
        d = dict(d)
        if base_dir:  # relative paths are relative to the config file
            for k in ("dataset", "model", "output_dir"):
                if isinstance(d[k], str) and not os.path.isabs(d[k]):
                    d[k] = os.path.join(base_dir, d[k])
        return cls(**d)

    @classmethod
    def from_json(cls, path: str) -> TrainConfig:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Training config {path!r} not found.")
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"Training config {path!r} is not valid JSON: {e}") from e
        return cls.from_dict(d, base_dir=os.path.dirname(os.path.abspath(path)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        d["towers"] = list(self.towers)
        d["adam_betas"] = list(self.adam_betas)
        return d
