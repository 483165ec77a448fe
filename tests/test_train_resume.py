"""Resuming training: old checkpoints still resume exactly, changed settings are applied or refused, metrics
do not repeat steps."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from train_utils import write_latent_dataset, write_tiny_model

from ovi_core.training import state as st
from ovi_core.training.checkpoint import latest_checkpoint
from ovi_core.training.config import TrainConfig
from ovi_core.training.objective import lr_lambda
from ovi_core.training.trainer import Trainer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    return {"tiny": write_tiny_model(str(d / "tiny.safetensors")), "ds": write_latent_dataset(str(d / "ds"))}


def _cfg(files, out, **kw) -> TrainConfig:
    base = dict(dataset=files["ds"], model=files["tiny"], output_dir=str(out), steps=4, learning_rate=1e-3, rank=4,
                mixed_precision="no", save_every=2, log_every=1, seed=3, warmup_steps=2, lr_schedule="cosine")
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg: TrainConfig, **kw):
    t = Trainer(cfg)
    try:
        return t.train(**kw), t
    finally:
        t.close()


@pytest.fixture(scope="module")
def killed(files, tmp_path_factory):
    """A reference run of 4 steps, and a run "killed" after step 3 (its last checkpoint: step 2)."""
    root = tmp_path_factory.mktemp("runs")
    ref, _ = _run(_cfg(files, root / "ref"))
    _run(_cfg(files, root / "killed"), stop_after=3)
    return {"ref": ref, "killed": root / "killed"}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _metric_steps(out) -> list[int]:
    return [json.loads(x)["step"] for x in open(os.path.join(out, "metrics.jsonl"))]


def test_resume_logs_each_step_once(files, killed, tmp_path):
    out = _copy(killed["killed"], tmp_path / "run")
    assert _metric_steps(out) == [1, 2, 3]  # step 3 was logged, but the checkpoint is at step 2
    res, _ = _run(_cfg(files, out))
    assert res.losses == killed["ref"].losses
    assert _metric_steps(out) == [1, 2, 3, 4]
    logged = [json.loads(x)["loss"] for x in open(os.path.join(out, "metrics.jsonl"))]
    assert logged == killed["ref"].losses


def test_checkpoint_of_the_first_format_resumes_exactly(files, killed, tmp_path):
    """Checkpoints written by the first releases (pickled state.pt / rng-rank0.pt holding plain data) still
    resume, read with weights_only=True, and give the same run."""
    out = _copy(killed["killed"], tmp_path / "run")
    ck = latest_checkpoint(str(out))
    for name, legacy in (("state", "state.pt"), ("rng-rank0", "rng-rank0.pt")):
        tree = st.load_tree(os.path.join(ck, name))
        torch.save(tree, os.path.join(ck, legacy))  # what the first format wrote
        os.remove(os.path.join(ck, name + ".json"))
        os.remove(os.path.join(ck, name + ".safetensors"))
    assert latest_checkpoint(str(out)) == ck
    res, _ = _run(_cfg(files, out))
    assert res.losses == killed["ref"].losses
    a, b = load_file(killed["ref"].lora_path), load_file(res.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_changed_learning_rate_and_schedule_are_applied(files, killed, tmp_path):
    out = _copy(killed["killed"], tmp_path / "run")
    cfg = _cfg(files, out, learning_rate=4e-3, warmup_steps=0, lr_schedule="linear", steps=6, adam_eps=1e-6)
    t = Trainer(cfg)
    try:
        t._maybe_resume()
        assert t.step == 2
        opt = t.scheduler.optimizer
        want = 4e-3 * lr_lambda(2, warmup=0, total=6, schedule="linear")
        assert opt.param_groups[0]["lr"] == pytest.approx(want) and t.scheduler.get_last_lr() == [opt.param_groups[0]["lr"]]
        assert opt.param_groups[0]["eps"] == 1e-6
        t.resume_plan = None  # already loaded
        res = t.train()
    finally:
        t.close()
    assert res.steps == 6
    lrs = {json.loads(x)["step"]: json.loads(x)["lr"] for x in open(os.path.join(out, "metrics.jsonl"))}
    for step in (3, 4, 5, 6):  # logged after the step: the rate the scheduler set for the next one
        assert lrs[step] == pytest.approx(4e-3 * lr_lambda(step, warmup=0, total=6, schedule="linear"))
    # the old rate would have given another LoRA
    ref = load_file(killed["ref"].lora_path)
    got = load_file(res.lora_path)
    assert any(not torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("field, value", [("rank", 8), ("targets", ["fusion"]), ("seed", 4), ("grad_accum", 2),
                                          ("alpha", 2.0)])
def test_settings_that_cannot_change_are_refused_before_the_model_loads(files, killed, tmp_path, field, value):
    out = _copy(killed["killed"], tmp_path / "run")
    cfg = _cfg(files, out, **{field: value}, model=str(tmp_path / "not-loaded-yet.safetensors"))
    with pytest.raises(ValueError, match=rf"{field} cannot change during a run") as e:
        Trainer(cfg)
    assert "another output" in str(e.value) and "delete" in str(e.value)


def test_unchanged_alpha_spelled_differently_is_not_a_change(files, killed, tmp_path):
    out = _copy(killed["killed"], tmp_path / "run")
    t = Trainer(_cfg(files, out, alpha=4.0, targets=["self_attn", "cross_attn", "fusion"]))  # = rank, = default
    try:
        assert t.resume_plan is not None and t.resume_plan.changed == {}
    finally:
        t.close()
