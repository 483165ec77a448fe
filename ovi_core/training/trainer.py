"""LoRA fine-tuning of the fusion DiT with the paper's joint flow-matching objective.

One optimisation step (``grad_accum`` micro-batches of ``batch_size`` clips per process)::

    s ~ sampling(uniform | logit-normal) then shifted      one s per clip, shared by both towers
    x_v = (1 - s) z_v + s n_v,  x_a = (1 - s) z_a + s n_a   independent noises n_v, n_a
    v_v, v_a = DiT(x_v, x_a, t = 1000 s, text, text)
    loss = w_v |v_v - (n_v - z_v)|^2 + w_a |v_a - (n_a - z_a)|^2     (w_v 0.85, w_a 0.15)

Determinism (for exact resume and identical ranks): the data order is a pure function of (seed, epoch)
and the global sample counter; noise and timesteps come from one CPU generator per rank, whose state
is saved in each checkpoint together with the LoRA weights, optimizer, scheduler and step.

Runs on one device, or on many through ``accelerate launch`` (DDP; FSDP wraps the whole DiT).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import fusion_version_from_name
from ovi_core.lora.network import LoRANetwork
from ovi_core.training import checkpoint as ckpt
from ovi_core.training.checkpoint import CHECKPOINT_DIR, ResumePlan, latest_checkpoint, list_checkpoints
from ovi_core.training.config import TrainConfig
from ovi_core.training.dataset import LatentDataset, collate
from ovi_core.training.objective import flow_matching_loss, lr_lambda, sample_sigmas

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]  # (step, total, loss)


# ----------------------------------------------------------------------------------------------
# Module seen by DDP / FSDP
# ----------------------------------------------------------------------------------------------


class TrainModule(nn.Module):
    """The LoRA (trainable, registered) and the frozen DiT. Under DDP the DiT is kept out of the
    module tree, so DDP neither broadcasts nor tracks its 11 B frozen weights; under FSDP it is
    registered so that FSDP shards it."""

    def __init__(self, dit: nn.Module, lora: LoRANetwork, *, register_dit: bool = False) -> None:
        super().__init__()
        self.lora = lora
        if register_dit:
            self.dit = dit
        else:
            self._dit_ref = (dit,)

    @property
    def base(self) -> nn.Module:
        return self.dit if "dit" in self._modules else self._dit_ref[0]

    def forward(self, video, audio, t, video_context, audio_context):
        """Velocities ``([B, 48, F, h, w], [B, L, 20])`` of the DiT with the LoRA active."""
        return self.base(video, audio, t, video_context, audio_context)


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    lora_path: str
    steps: int
    losses: list[float] = field(default_factory=list)  # per optimizer step (mean over ranks)
    validation: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def lora_digest(network: LoRANetwork) -> str:
    """SHA-256 over the LoRA weights (names and bytes), to compare copies across ranks or runs."""
    h = hashlib.sha256()
    for k, v in sorted(network.lora_state_dict().items()):
        h.update(k.encode())
        h.update(v.float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _drop_inference_tensors(module: nn.Module) -> None:
    """Weights created under ``torch.inference_mode`` (ComfyUI loads every model that way) cannot take part in
    autograd: swap each for a normal copy, one tensor at a time (no second copy of the whole model)."""
    with torch.inference_mode(False):
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.is_inference():
                    m._parameters[name] = nn.Parameter(p.clone(), requires_grad=p.requires_grad)
            for name, b in list(m._buffers.items()):
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()


class Trainer:
    """Train a LoRA on a prepared dataset. ``model``/``dataset`` may be given (e.g. by the ComfyUI node);
    otherwise they are loaded from ``config.model`` / ``config.dataset``."""

    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None, dataset: LatentDataset | None = None,
                 accelerator=None, progress: ProgressFn | None = None,
                 check_interrupt: Callable[[], None] | None = None) -> None:
        from accelerate import Accelerator

        self.cfg = config
        if accelerator is None:
            kwargs = {}
            if config.distributed == "fsdp":
                from accelerate import FullyShardedDataParallelPlugin

                # full state dicts, read with weights_only=True (sharded DCP checkpoints keep pickled metadata)
                kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True,
                                                                       state_dict_type="FULL_STATE_DICT")
            # no GPU: processes started by `accelerate launch --multi_gpu` / torchrun talk over gloo
            accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available(), **kwargs)
        self.acc = accelerator
        self.progress = progress
        self.check_interrupt = check_interrupt
        dev = torch.device(self.acc.device)
        self.device = torch.device("cpu") if dev.type == "cpu" else dev  # 'cpu:0' confuses some readers
        self.rank = self.acc.process_index
        self.world = self.acc.num_processes
        self.dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float32
        self.fsdp = config.distributed == "fsdp" and self.world > 1
        self.out_dir = config.output_dir
        # the checkpoint to resume from, checked against this config before anything heavy loads
        self.resume_plan: ResumePlan | None = self._plan_resume()
        self.model_version = config.model_version or self._model_version()  # validates the file's metadata

        self.dataset = dataset if dataset is not None else LatentDataset(config.dataset)
        self.dit = model if model is not None else self._load_model()
        self._restore = (self.dit.training, any(p.requires_grad for p in self.dit.parameters()),
                         getattr(self.dit, "gradient_checkpointing", None))
        if model is not None and not self.fsdp:
            self.dit.to(self.device)
        _drop_inference_tensors(self.dit)
        self.dit.requires_grad_(False)
        self.dit.train()  # the DiT has no dropout; train mode enables its gradient checkpointing
        if hasattr(self.dit, "gradient_checkpointing"):
            self.dit.gradient_checkpointing = bool(config.gradient_checkpointing)
        elif config.gradient_checkpointing:
            logger.warning("This model has no gradient_checkpointing switch; training without it.")

        self.lora = LoRANetwork.for_model(self.dit, config.lora_config(), device="cpu", seed=config.seed)
        self.lora.to(self.device)
        self.lora.attach(self.dit)
        self.lora.train()
        self.module = TrainModule(self.dit, self.lora, register_dit=self.fsdp)
        params = [p for p in self.lora.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=config.adam_betas,
                                           eps=config.adam_eps, weight_decay=config.weight_decay)
        self.module, self.optimizer = self.acc.prepare(self.module, self.optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
            lambda s: lr_lambda(s, warmup=config.warmup_steps, total=config.steps, schedule=config.lr_schedule),
        )
        self.generator = torch.Generator("cpu").manual_seed(self._rank_seed())
        # the global RNGs drive LoRA dropout: seed them so that a run does not depend on what ran before
        torch.manual_seed(self._rank_seed())
        random.seed(self._rank_seed())
        self.step = 0
        self.losses: list[float] = []
        self.validation: list[dict] = []
        if self.acc.is_main_process:
            os.makedirs(os.path.join(self.out_dir, CHECKPOINT_DIR), exist_ok=True)
        self.acc.wait_for_everyone()

    # -- setup --------------------------------------------------------------------------------

    def _rank_seed(self) -> int:
        return (int(self.cfg.seed) * 1_000_003 + 7919 * self.rank) % (2**63 - 1)

    def _load_model(self) -> nn.Module:
        from ovi_core.model.loader import load_fusion

        load_device = "cpu" if self.fsdp else self.device
        return load_fusion(self.cfg.model, device=load_device, dtype=self.dtype)

    def _model_version(self) -> str:
        from ovi_core.sizes import MODEL_SPECS

        path = str(self.cfg.model)
        version = None
        if path.endswith(ck.SAFETENSORS_EXT) and os.path.isfile(path):
            try:
                meta = ck.read_safetensors_header(path)[1]
            except (ValueError, OSError):
                meta = {}
            version = ck.meta_choice(meta, "ovi.version", path=path, choices=MODEL_SPECS)
        return version or fusion_version_from_name(path) or "unknown"

    # -- data -----------------------------------------------------------------------------------

    def _indices(self, micro_step: int) -> list[int]:
        """Dataset indices of this rank's micro-batch number ``micro_step`` (a pure function)."""
        n = len(self.dataset)
        out = []
        for j in range(self.cfg.batch_size):
            g = (micro_step * self.cfg.batch_size + j) * self.world + self.rank  # global sample counter
            epoch, pos = divmod(g, n)
            perm = torch.randperm(n, generator=torch.Generator("cpu").manual_seed(int(self.cfg.seed) + 104729 * epoch))
            out.append(int(perm[pos]))
        return out

    def _batch(self, micro_step: int) -> dict:
        b = collate([self.dataset[i] for i in self._indices(micro_step)])
        return b

    # -- one step -------------------------------------------------------------------------------

    def _micro_loss(self, batch: dict) -> tuple[torch.Tensor, float, float]:
        cfg = self.cfg
        video = batch["video"].float()
        audio = batch["audio"].float()
        b = video.shape[0]
        sigma = sample_sigmas(b, generator=self.generator, mode=cfg.timestep_sampling, logit_mean=cfg.logit_mean,
                              logit_std=cfg.logit_std, shift=cfg.timestep_shift)
        nv = torch.randn(video.shape, generator=self.generator, dtype=torch.float32)
        na = torch.randn(audio.shape, generator=self.generator, dtype=torch.float32)
        dev = self.device
        text = [t.to(dev) for t in batch["text"]]
        loss, lv, la = flow_matching_loss(
            self.module, video.to(dev), audio.to(dev), text, text, sigma=sigma.to(dev), video_noise=nv.to(dev),
            audio_noise=na.to(dev), video_weight=cfg.video_loss_weight, audio_weight=cfg.audio_loss_weight,
            dtype=self.dtype,
        )
        return loss, float(lv.detach()), float(la.detach())

    def train_step(self) -> float:
        """One optimizer step; returns the loss averaged over micro-batches and ranks."""
        cfg = self.cfg
        total = torch.zeros(3, dtype=torch.float64)
        for k in range(cfg.grad_accum):
            micro = self.step * cfg.grad_accum + k
            last = k == cfg.grad_accum - 1
            ctx = contextlib.nullcontext() if last else self.acc.no_sync(self.module)
            with ctx:
                loss, lv, la = self._micro_loss(self._batch(micro))
                self.acc.backward(loss / cfg.grad_accum)
            total += torch.tensor([float(loss.detach()), lv, la], dtype=torch.float64)
        if cfg.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.module.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        mean = (total / cfg.grad_accum).to(self.device)
        if self.world > 1:
            mean = self.acc.reduce(mean, reduction="mean")
        loss_v = float(mean[0])
        self.losses.append(loss_v)
        self.last_parts = (float(mean[1]), float(mean[2]))
        return loss_v

    # -- validation -------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict:
        """Loss at fixed noise levels (0.1 .. 0.9) and fixed noises on up to 4 clips: comparable across
        steps and runs. With ``validation_sample`` also samples latents for the first caption."""
        cfg = self.cfg
        g = torch.Generator("cpu").manual_seed(int(cfg.seed) + 99991)
        levels = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
        self.lora.eval()
        try:
            vals = []
            for i in range(min(4, len(self.dataset))):
                s = self.dataset[i]
                for lvl in levels:
                    video, audio = s["video"][None].float(), s["audio"][None].float()
                    nv = torch.randn(video.shape, generator=g)
                    na = torch.randn(audio.shape, generator=g)
                    text = [s["text"].to(self.device)]
                    loss, _, _ = flow_matching_loss(
                        self.lora_base, video.to(self.device), audio.to(self.device), text, text,
                        sigma=lvl.view(1).to(self.device), video_noise=nv.to(self.device),
                        audio_noise=na.to(self.device), video_weight=cfg.video_loss_weight,
                        audio_weight=cfg.audio_loss_weight, dtype=self.dtype)
                    vals.append(float(loss))
            rec = {"step": self.step, "val_loss": sum(vals) / len(vals)}
            if cfg.validation_sample and self.acc.is_main_process:
                rec["sample"] = self._sample()
        finally:
            self.lora.train()
        self.validation.append(rec)
        return rec

    @property
    def lora_base(self) -> nn.Module:
        return self.dit

    def _sample(self) -> str:
        from safetensors.torch import save_file

        from ovi_core.sampling.av import sample_av
        from ovi_core.sampling.settings import SamplingSettings
        from ovi_core.text.conditioning import Conditioning

        s = self.dataset[0]
        emb = s["text"]
        cond = Conditioning(positive=emb, video_negative=emb, audio_negative=emb, prompt=s["name"])
        v = s["video"]
        # guidance 1: the plain conditional prediction (negatives unused)
        settings = SamplingSettings(steps=self.cfg.validation_steps, video_guidance_scale=1.0,
                                    audio_guidance_scale=1.0, slg_layer=-1, seed=self.cfg.seed)
        lat = sample_av(self.dit, cond, height=v.shape[-2] * 16, width=v.shape[-1] * 16, settings=settings,
                        version=self._spec_version(), device=self.device, dtype=self.dtype)
        path = os.path.join(self.out_dir, "samples", f"step-{self.step:06d}.safetensors")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file({"video_latent": lat.video.contiguous(), "audio_latent": lat.audio.contiguous()}, path,
                  metadata={"caption_of": s["name"], "step": str(self.step)})
        return path

    def _spec_version(self) -> str:
        v = self.model_version
        return v if v in ("1.0", "1.1", "1.1-10s") else "1.0"

    # -- checkpoints ------------------------------------------------------------------------------

    def _ckpt_dir(self, step: int) -> str:
        return os.path.join(self.out_dir, CHECKPOINT_DIR, f"step-{step:06d}")

    def save_checkpoint(self) -> str:
        """Write ``checkpoints/step-NNNNNN/`` atomically (a temp folder renamed when complete); no pickles
        (see :mod:`ovi_core.training.checkpoint`)."""
        final = self._ckpt_dir(self.step)
        tmp = final + ".tmp"
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        self.acc.wait_for_everyone()
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
        ckpt.write_rng(tmp, self.rank, rng)
        if self.fsdp:
            self.acc.save_state(os.path.join(tmp, "accelerate"))
        if self.acc.is_main_process:
            self.lora.save(os.path.join(tmp, "lora.safetensors"), base_version=self.model_version)
            state = {"step": self.step, "scheduler": self.scheduler.state_dict(), "losses": self.losses,
                     "validation": self.validation, "world": self.world, "fsdp": self.fsdp}
            if not self.fsdp:
                state["optimizer"] = self.optimizer.state_dict()
            ckpt.write_state(tmp, state)
            with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
                json.dump(self.cfg.to_dict(), f, indent=1)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune()
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            logger.info("checkpoint %s", final)
        return final

    def _prune(self) -> None:
        keep = self.cfg.keep_checkpoints
        if keep <= 0:
            return
        for d in list_checkpoints(self.out_dir)[:-keep]:
            shutil.rmtree(d, ignore_errors=True)

    def _plan_resume(self) -> ResumePlan | None:
        r = self.cfg.resume
        if not r:
            return None
        path = latest_checkpoint(self.out_dir) if r == "auto" else r
        if path is None:
            return None
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Checkpoint {path!r} to resume from does not exist.")
        plan = ckpt.check_resume(path, self.cfg, world=self.world, rank=self.rank, fsdp=self.fsdp)
        for k, (old, new) in plan.changed.items():
            logger.info("resume from %s: %s changed from %r to %r (applied)", os.path.basename(path), k, old, new)
        return plan

    def load_checkpoint(self, path: str) -> None:
        """Restore LoRA weights, optimizer, scheduler, RNG states and step from ``path``, then apply this run's
        learning rate, optimizer settings and schedule (fields that cannot change are refused)."""
        if self.resume_plan is None or self.resume_plan.path != path:
            self.resume_plan = ckpt.check_resume(path, self.cfg, world=self.world, rank=self.rank, fsdp=self.fsdp)
        state = ckpt.read_state(path)
        rng = ckpt.read_rng(path, self.rank)
        lora_sd, _ = ck.read_tensor_file(os.path.join(path, "lora.safetensors"), what="Checkpoint LoRA")
        self.lora.load_lora_state_dict(lora_sd)
        if self.fsdp:
            acc_dir = os.path.join(path, "accelerate")
            ckpt.check_accelerate_dir(acc_dir)
            self.acc.load_state(acc_dir, load_kwargs={"weights_only": True})
        else:
            if "optimizer" not in state:
                raise ck.CheckpointError(f"Checkpoint {path!r} holds no optimizer state; it is damaged.")
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_hyperparameters()
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        self.step = int(state["step"])
        self.losses = list(state.get("losses", []))
        self.validation = list(state.get("validation", []))
        logger.info("resumed from %s at step %d", path, self.step)

    def _apply_hyperparameters(self) -> None:
        """After loading a checkpoint: this config's learning rate, AdamW settings and LR schedule, at the
        restored scheduler position (the same values when nothing changed)."""
        cfg, sched = self.cfg, self.scheduler
        groups = sched.optimizer.param_groups
        for g in groups:
            g.update(initial_lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps,
                     weight_decay=cfg.weight_decay)
        sched.base_lrs = [cfg.learning_rate for _ in groups]
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)]
        for g, lr in zip(groups, lrs, strict=True):
            g["lr"] = lr
        sched._last_lr = list(lrs)

    def _maybe_resume(self) -> None:
        if self.resume_plan is not None:
            self.load_checkpoint(self.resume_plan.path)

    # -- the loop -----------------------------------------------------------------------------------

    def final_lora_path(self) -> str:
        return os.path.join(self.out_dir, f"{self.cfg.output_name}.safetensors")

    def train(self, *, stop_after: int | None = None) -> TrainResult:
        """Run to ``config.steps`` (or stop after ``stop_after`` steps of this call, leaving no final
        file: used to simulate an interrupted run)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self._maybe_resume()
        start = self.step
        metrics = os.path.join(self.out_dir, "metrics.jsonl")
        if self.acc.is_main_process:
            ckpt.trim_metrics(metrics, self.step)  # steps after the checkpoint are logged again below
        while self.step < cfg.steps:
            if self.check_interrupt is not None:
                self.check_interrupt()
            loss = self.train_step()
            if self.acc.is_main_process and (self.step % max(1, cfg.log_every) == 0 or self.step == cfg.steps):
                lr = self.scheduler.get_last_lr()[0]
                logger.info("step %d/%d loss %.5f (video %.5f audio %.5f) lr %.3g", self.step, cfg.steps, loss,
                            *self.last_parts, lr)
                with open(metrics, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": self.step, "loss": loss, "video": self.last_parts[0],
                                        "audio": self.last_parts[1], "lr": lr}) + "\n")
            if self.progress is not None:
                self.progress(self.step, cfg.steps, loss)
            if cfg.validate_every and self.step % cfg.validate_every == 0:
                rec = self.validate()
                if self.acc.is_main_process:
                    logger.info("validation at step %d: %s", self.step, rec)
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
            if stop_after is not None and self.step - start >= stop_after:
                return TrainResult(lora_path="", steps=self.step, losses=list(self.losses),
                                   validation=list(self.validation), seconds=time.perf_counter() - t0)
        path = self.final_lora_path()
        if self.acc.is_main_process:
            self.lora.save(path, base_version=self.model_version,
                           extra_metadata={"ovi.lora.steps": str(self.step), "ovi.lora.learning_rate":
                                           repr(cfg.learning_rate)})
        # every rank records a digest of its copy (identical under DDP)
        with open(os.path.join(self.out_dir, f"lora_sha256_rank{self.rank}.txt"), "w", encoding="utf-8") as f:
            f.write(lora_digest(self.lora) + "\n")
        self.acc.wait_for_everyone()
        return TrainResult(lora_path=path, steps=self.step, losses=list(self.losses),
                           validation=list(self.validation), seconds=time.perf_counter() - t0)

    def close(self) -> None:
        """Detach the LoRA and put the DiT's mode, grad flags and checkpointing switch back."""
        self.lora.detach()
        training, grads, gc = self._restore
        self.dit.train(training)
        self.dit.requires_grad_(grads)
        if gc is not None:
            self.dit.gradient_checkpointing = gc


def train(config: TrainConfig, **kwargs) -> TrainResult:
    """Build a :class:`Trainer` and run it to the end."""
    t = Trainer(config, **kwargs)
    try:
        return t.train()
    finally:
        t.close()
