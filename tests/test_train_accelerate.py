"""`accelerate launch` with two CPU processes (gloo DDP): the run finishes and both ranks hold the same LoRA."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from train_utils import write_latent_dataset, write_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_process_accelerate_run_keeps_ranks_identical(tmp_path):
    write_latent_dataset(str(tmp_path / "ds"), n=3)
    write_tiny_model(str(tmp_path / "m.safetensors"))
    cfg = {"dataset": "ds", "model": "m.safetensors", "output_dir": "out", "steps": 3, "learning_rate": 1e-3,
           "rank": 4, "mixed_precision": "no", "save_every": 2, "seed": 1, "grad_accum": 2}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", MASTER_PORT="0")
    # `--multi_gpu` selects the torchrun launcher; without GPUs the trainer runs DDP over gloo on CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "ovi_core", "train", str(tmp_path / "cfg.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    digests = [(out / f"lora_sha256_rank{r}.txt").read_text().strip() for r in (0, 1)]
    assert digests[0] == digests[1] and len(digests[0]) == 64
    assert (out / "ovi_lora.safetensors").is_file()
    ck = out / "checkpoints" / "step-000002"
    assert all((ck / f"rng-rank{r}.{ext}").is_file() for r in (0, 1) for ext in ("json", "safetensors"))
    assert not list(ck.glob("*.pt"))  # no pickles
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # only rank 0 logs

    # the file rank 0 wrote is the weights both ranks hold
    from safetensors.torch import load_file

    from ovi_core.lora.files import network_from_state_dict
    from ovi_core.training.trainer import lora_digest

    saved = network_from_state_dict(load_file(str(out / "ovi_lora.safetensors")))
    assert lora_digest(saved) == digests[0]
