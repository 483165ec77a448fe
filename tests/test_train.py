"""Trainer on tiny models: the objective, learning, exact resume, checkpoints, checkpointing, config."""

from __future__ import annotations

import json
import os

import pytest
import torch
from train_utils import write_fit_model, write_latent_dataset, write_tiny_model

from ovi_core.training.checkpoint import latest_checkpoint, list_checkpoints
from ovi_core.training.config import TrainConfig
from ovi_core.training.objective import flow_matching_loss, lr_lambda, sample_sigmas, shift_sigma
from ovi_core.training.plot import loss_curve_image
from ovi_core.training.trainer import Trainer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    return {
        "tiny": write_tiny_model(str(d / "tiny.safetensors")),
        "fit": write_fit_model(str(d / "fit.safetensors")),
        "ds": write_latent_dataset(str(d / "ds")),
        "ds_fit": write_latent_dataset(str(d / "ds_fit"), offset=2.0),
    }


def _cfg(files, out, **kw) -> TrainConfig:
    base = dict(dataset=files["ds"], model=files["tiny"], output_dir=str(out), steps=6, learning_rate=1e-3, rank=4,
                mixed_precision="no", save_every=0, log_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# -- objective ------------------------------------------------------------------------------------


def test_flow_matching_objective_targets_and_weights():
    g = torch.Generator().manual_seed(0)
    v0, a0 = torch.randn(2, 48, 1, 2, 2, generator=g), torch.randn(2, 3, 20, generator=g)
    nv, na = torch.randn(v0.shape, generator=g), torch.randn(a0.shape, generator=g)
    sigma = torch.tensor([0.25, 0.8])
    seen = {}

    def oracle(xv, xa, t, vctx, actx):  # returns the exact velocity, and records its inputs
        seen.update(xv=xv, xa=xa, t=t)
        return nv - v0, na - a0

    loss, lv, la = flow_matching_loss(oracle, v0, a0, [], [], sigma=sigma, video_noise=nv, audio_noise=na)
    assert float(loss) == 0.0 and float(lv) == 0.0 and float(la) == 0.0
    torch.testing.assert_close(seen["t"], torch.tensor([250.0, 800.0]))
    torch.testing.assert_close(seen["xv"][1], 0.2 * v0[1] + 0.8 * nv[1])
    torch.testing.assert_close(seen["xa"][0], 0.75 * a0[0] + 0.25 * na[0])

    def zero(xv, xa, t, vctx, actx):
        return torch.zeros_like(xv), torch.zeros_like(xa)

    loss, lv, la = flow_matching_loss(zero, v0, a0, [], [], sigma=sigma, video_noise=nv, audio_noise=na,
                                      video_weight=0.85, audio_weight=0.15)
    torch.testing.assert_close(lv, ((nv - v0) ** 2).mean())
    torch.testing.assert_close(la, ((na - a0) ** 2).mean())
    torch.testing.assert_close(loss, 0.85 * lv + 0.15 * la)


def test_timestep_sampling_and_shift():
    g = torch.Generator().manual_seed(0)
    u = sample_sigmas(4000, generator=g)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.02
    ln = sample_sigmas(4000, generator=g, mode="logit_normal", logit_mean=1.0, logit_std=0.5)
    assert abs(float(ln.median()) - float(torch.sigmoid(torch.tensor(1.0)))) < 0.02
    s = torch.tensor([0.0, 0.2, 0.5, 1.0])
    torch.testing.assert_close(shift_sigma(s, 3.0), 3 * s / (1 + 2 * s))
    sh = sample_sigmas(4000, generator=torch.Generator().manual_seed(1), shift=3.0)
    assert float(sh.mean()) > 0.65  # shift > 1 favours high noise
    assert [lr_lambda(i, warmup=4, total=10, schedule="constant") for i in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert lr_lambda(9, warmup=0, total=10, schedule="linear") == pytest.approx(0.1)


# -- learning -------------------------------------------------------------------------------------------


def test_training_on_two_clips_halves_the_loss(files, tmp_path):
    cfg = _cfg(files, tmp_path / "out", model=files["fit"], dataset=files["ds_fit"], steps=30, learning_rate=1e-2,
               rank=8, validate_every=30, seed=0)
    t = Trainer(cfg)
    try:
        start = t.validate()["val_loss"]
        res = t.train()
    finally:
        t.close()
    end = res.validation[-1]["val_loss"]
    assert end <= 0.5 * start, (start, end)
    assert sum(res.losses[-5:]) / 5 <= 0.5 * sum(res.losses[:5]) / 5
    assert os.path.isfile(res.lora_path)
    lines = [json.loads(x) for x in open(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == list(range(1, 31))


def test_kill_and_resume_gives_the_same_next_loss(files, tmp_path):
    kw = dict(steps=4, save_every=2, grad_accum=2, warmup_steps=2, timestep_sampling="logit_normal",
              timestep_shift=3.0, dropout=0.1, mixed_precision="bf16", lr_schedule="cosine")
    full = Trainer(_cfg(files, tmp_path / "full", **kw))
    try:
        ref = full.train()
    finally:
        full.close()

    first = Trainer(_cfg(files, tmp_path / "resumed", **kw))
    try:
        part = first.train(stop_after=3)  # "killed" after step 3: the last checkpoint is step 2
    finally:
        first.close()
    assert part.losses == ref.losses[:3]
    assert os.path.basename(latest_checkpoint(str(tmp_path / "resumed"))) == "step-000002"

    second = Trainer(_cfg(files, tmp_path / "resumed", **kw))
    try:
        res = second.train()
        assert second.step == 4
    finally:
        second.close()
    assert res.losses[2] == ref.losses[2]  # the next loss after the checkpoint, bit for bit
    assert res.losses == ref.losses
    from safetensors.torch import load_file

    a, b = load_file(ref.lora_path), load_file(res.lora_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_atomic_and_pruned(files, tmp_path):
    out = tmp_path / "ck"
    t = Trainer(_cfg(files, out, steps=5, save_every=1, keep_checkpoints=2))
    try:
        t.train()
    finally:
        t.close()
    names = [os.path.basename(p) for p in list_checkpoints(str(out))]
    assert names == ["step-000003", "step-000004"]  # the last step writes the final LoRA instead
    os.makedirs(out / "checkpoints" / "step-000009.tmp")  # a half-written checkpoint from a crash
    assert os.path.basename(latest_checkpoint(str(out))) == "step-000004"
    ck = out / "checkpoints" / "step-000004"
    assert sorted(os.listdir(ck)) == ["config.json", "lora.safetensors", "rng-rank0.json", "rng-rank0.safetensors",
                                      "state.json", "state.safetensors"]  # no pickles


def test_gradient_checkpointing_gives_the_same_gradients(files, tmp_path):
    grads = []
    for gc in (False, True):
        t = Trainer(_cfg(files, tmp_path / f"gc{gc}", gradient_checkpointing=gc, steps=1))
        try:
            with torch.no_grad():
                for p in t.lora.parameters():
                    p.add_(0.01)
            loss, _, _ = t._micro_loss(t._batch(0))
            loss.backward()
            grads.append([p.grad.clone() for p in t.lora.parameters()])
        finally:
            t.close()
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_config_json_and_errors(files, tmp_path):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"dataset": "ds", "model": "m.safetensors", "output_dir": "out", "rank": 8,
                             "targets": ["fusion"]}))
    cfg = TrainConfig.from_json(str(p))
    assert cfg.dataset == str(tmp_path / "ds") and cfg.rank == 8 and cfg.video_loss_weight == 0.85
    assert cfg.lora_config().targets == ("cross_attn.k_fusion", "cross_attn.v_fusion")
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"dataset": "d", "model": "m", "output_dir": "o", "stepz": 3})
    with pytest.raises(ValueError, match="timestep_sampling"):
        _cfg(files, tmp_path, timestep_sampling="cubic")
    with pytest.raises(FileNotFoundError, match="prepare the dataset"):
        Trainer(_cfg(files, tmp_path / "x", dataset=str(tmp_path)))


def test_loss_curve_image():
    img = loss_curve_image([3.0, 2.0, 1.5, 1.0, float("nan"), 0.8], width=128, height=64)
    assert img.shape == (1, 64, 128, 3) and img.dtype == torch.float32
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    blue = (img[0, :, :, 2] > 0.7) & (img[0, :, :, 0] < 0.2)
    cols = blue.any(dim=0).nonzero().flatten()
    assert cols.min() < 30 and cols.max() > 90  # the curve spans the plot
    first_rows = blue[:, int(cols.min())].nonzero().flatten()
    last_rows = blue[:, int(cols.max())].nonzero().flatten()
    assert first_rows.float().mean() < last_rows.float().mean()  # a falling loss goes down the image


def test_periodic_validation_loss_and_sample(files, tmp_path):
    from safetensors.torch import load_file

    t = Trainer(_cfg(files, tmp_path / "val", steps=2, validate_every=1, validation_sample=True, validation_steps=2))
    try:
        res = t.train()
    finally:
        t.close()
    assert [v["step"] for v in res.validation] == [1, 2]
    lat = load_file(res.validation[-1]["sample"])
    assert lat["video_latent"].shape == (1, 48, 31, 4, 4) and lat["audio_latent"].shape == (1, 157, 20)
    assert torch.isfinite(lat["video_latent"]).all()
