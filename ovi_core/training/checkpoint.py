"""Training checkpoints: the folder layout, finding the latest, and what may change on resume.

``OUT/checkpoints/step-NNNNNN/``::

    lora.safetensors                       the LoRA weights
    state.json + state.safetensors         step, optimizer and scheduler state, losses, validation, world size
    rng-rank{R}.json + .safetensors        the RNG states of process R (noise generator, torch, python)
    config.json                            the training config of the run that wrote it
    accelerate/                            FSDP only: accelerate's sharded model/optimizer state

(no pickles; see :mod:`ovi_core.training.state`). Checkpoints of the first format (``state.pt``,
``rng-rank{R}.pt``) still resume; they are read with ``torch.load(weights_only=True)``.

A resumed run must keep what shapes the LoRA or fixes the data order and the noise; everything else (learning
rate, schedule, steps, loss weights, ...) may change and is applied. :func:`check_resume` decides, before any
weights load.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from ovi_core.io import checkpoints as ck
from ovi_core.training import state as st
from ovi_core.training.config import TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE = "state"
LEGACY_STATE = "state.pt"

# fields that cannot change within a run, and why
FIXED_FIELDS: dict[str, str] = {
    "rank": "it sets the shape of every LoRA weight",
    "alpha": "it sets the scale the LoRA weights were trained for",
    "targets": "it decides which layers have LoRA weights",
    "towers": "it decides which layers have LoRA weights",
    "seed": "it fixes the data order and the noise of the run",
    "batch_size": "it fixes which clips each step has seen",
    "grad_accum": "it fixes which clips each step has seen",
}
# fields that say nothing about the training itself
_IGNORED = ("resume", "extra", "output_dir")


def rng_name(rank: int) -> str:
    return f"rng-rank{rank}"


def has_state(path: str) -> bool:
    return st.has_tree(os.path.join(path, STATE)) or os.path.isfile(os.path.join(path, LEGACY_STATE))


def list_checkpoints(out_dir: str) -> list[str]:
    """Complete checkpoint folders of ``out_dir``, oldest first (half-written ``.tmp`` folders skipped)."""
    root = os.path.join(out_dir, CHECKPOINT_DIR)
    if not os.path.isdir(root):
        return []
    names = sorted(d for d in os.listdir(root) if d.startswith("step-") and not d.endswith(".tmp")
                   and has_state(os.path.join(root, d)))
    return [os.path.join(root, d) for d in names]


def latest_checkpoint(out_dir: str) -> str | None:
    c = list_checkpoints(out_dir)
    return c[-1] if c else None


def read_state(path: str) -> dict[str, Any]:
    """The ``state`` tree of checkpoint folder ``path`` (either format)."""
    if st.has_tree(os.path.join(path, STATE)):
        state = st.load_tree(os.path.join(path, STATE))
    else:
        state = st.load_legacy(os.path.join(path, LEGACY_STATE))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise ck.CheckpointError(f"Checkpoint {path!r}: its state holds no valid step; the checkpoint is damaged. "
                                 "Delete it and resume from another.")
    return state


def read_rng(path: str, rank: int) -> dict[str, Any]:
    base = os.path.join(path, rng_name(rank))
    rng = st.load_tree(base) if st.has_tree(base) else st.load_legacy(base + ".pt")
    if not isinstance(rng, dict) or not {"generator", "torch", "python"} <= set(rng):
        raise ck.CheckpointError(f"Checkpoint {path!r}: the RNG state of process {rank} is incomplete; the "
                                 "checkpoint is damaged. Delete it and resume from another.")
    return rng


def write_state(path: str, state: dict[str, Any]) -> None:
    st.save_tree(state, os.path.join(path, STATE))


def write_rng(path: str, rank: int, rng: dict[str, Any]) -> None:
    st.save_tree(rng, os.path.join(path, rng_name(rank)))


def _normalised(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    lc = cfg.lora_config()
    d.update(alpha=lc.effective_alpha, targets=list(lc.targets), towers=list(lc.towers))
    return d


@dataclass(frozen=True)
class ResumePlan:
    path: str
    step: int
    changed: dict[str, tuple[Any, Any]]  # field -> (checkpoint's value, this run's value), all applied


def check_resume(path: str, cfg: TrainConfig, *, world: int, rank: int = 0, fsdp: bool,
                 how: str = "") -> ResumePlan:
    """Check that ``cfg`` can continue checkpoint ``path``; ``ValueError`` naming the field that cannot change.
    Reads the small state files (and refuses damaged or planted ones) and the LoRA's header: no weights.

    ``how`` tells the user how to start a fresh run instead (e.g. "use another output_name").
    """
    state = read_state(path)
    read_rng(path, rank)
    lora = os.path.join(path, "lora.safetensors")
    try:
        ck.read_safetensors_header(lora)
    except (ValueError, FileNotFoundError) as e:
        raise ck.CheckpointError(f"Checkpoint LoRA: {e}") from e
    fresh = how or (f"start a new run in another output folder (in ComfyUI: another output_name), or delete "
                    f"{os.path.dirname(path)!r} to start over")
    if state.get("world", world) != world:
        raise ValueError(f"Checkpoint {path} was written by {state['world']} processes, this run has {world}; "
                         "resume with the same number of processes.")
    if bool(state.get("fsdp", fsdp)) != fsdp:
        raise ValueError(f"Checkpoint {path} was written {'with' if state.get('fsdp') else 'without'} FSDP; resume "
                         f"with the same 'distributed' setting, or {fresh}.")
    changed: dict[str, tuple[Any, Any]] = {}
    cfg_file = os.path.join(path, "config.json")
    if os.path.isfile(cfg_file):
        raw = ck.read_json_file(cfg_file, what="Checkpoint config")
        try:
            old = TrainConfig.from_dict({k: v for k, v in raw.items() if k in cfg.to_dict()})
        except (ValueError, TypeError) as e:
            raise ck.CheckpointError(f"Checkpoint config {cfg_file!r} is not a valid training config ({e}); the "
                                     "checkpoint is damaged.") from e
        a, b = _normalised(old), _normalised(cfg)
        for k in b:
            if k in _IGNORED or a.get(k) == b[k]:
                continue
            if k in FIXED_FIELDS:
                raise ValueError(
                    f"Cannot resume {path} with {k}={json.dumps(b[k])}: the run was started with {k}="
                    f"{json.dumps(a.get(k))}, and {k} cannot change during a run ({FIXED_FIELDS[k]}). Keep "
                    f"{k}={json.dumps(a.get(k))} to continue, or {fresh}.")
            changed[k] = (a.get(k), b[k])
    else:
        logger.warning("Checkpoint %s has no config.json; cannot check that the settings match.", path)
    return ResumePlan(path=path, step=int(state["step"]), changed=changed)


def check_accelerate_dir(path: str) -> None:
    """Refuse an FSDP state folder that accelerate would not read with ``weights_only=True``: sharded (DCP)
    checkpoints (their ``.metadata`` is a pickle) and registered custom objects (``custom_checkpoint_N.pkl``)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Checkpoint folder {path!r} (FSDP state) not found; the checkpoint is incomplete.")
    odd = sorted(f for f in os.listdir(path) if f == ".metadata" or f.endswith(".distcp")
                 or f.startswith("custom_checkpoint_"))
    if odd:
        raise ck.CheckpointError(f"FSDP state {path!r} holds {odd[:3]}: sharded or custom checkpoints are pickles "
                                 "and are not loaded. Resume from a checkpoint this trainer wrote (full state dicts).")


def trim_metrics(path: str, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` after ``step`` (a resumed run logs those steps again)."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
    from ovi_core.io.files import atomic_path

    with atomic_path(path, suffix=".jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
