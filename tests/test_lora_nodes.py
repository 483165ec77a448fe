"""LoRA ComfyUI nodes (called directly, without ComfyUI) and the training workflow files.

``python tools/make_workflows.py`` regenerates the training workflow (``_train_lora_spec``) with the others.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "tools"), os.path.dirname(os.path.abspath(__file__))):
    if p not in sys.path:
        sys.path.insert(0, p)



def _use_our_nodes() -> None:
    """pytest may put the parent of this repo first on sys.path (the repo root is a package, for ComfyUI),
    where a sibling folder named "nodes" would shadow ours: make `nodes` this repo's package."""
    n = sys.modules.get("nodes")
    if n is not None and not os.path.abspath(getattr(n, "__file__", "") or "").startswith(ROOT + os.sep):
        for k in [k for k in sys.modules if k == "nodes" or k.startswith("nodes.")]:
            del sys.modules[k]
    if sys.path[0] != ROOT:
        sys.path.insert(0, ROOT)


def test_training_workflows_are_current_and_valid():
    _use_our_nodes()
    import make_workflows as mw

    from nodes import NODE_CLASS_MAPPINGS as ALL
    from nodes.lora import NODE_CLASS_MAPPINGS as OURS

    for path, data in mw.build().items():
        if "ovi_train_lora" in os.path.basename(path):
            with open(path, encoding="utf-8") as f:
                assert f.read() == mw.text(data), f"{path} is stale: run python tools/make_workflows.py"
    with open(mw.workflow_path("ovi_train_lora", "api"), encoding="utf-8") as f:
        api = json.load(f)
    known = {**ALL, **OURS}
    for nid, node in api.items():
        if node["class_type"] == "PreviewImage":
            continue
        cls = known[node["class_type"]]
        spec = cls.INPUT_TYPES()
        names = set(spec.get("required", {})) | set(spec.get("optional", {}))
        assert set(node["inputs"]) <= names, (nid, set(node["inputs"]) - names)
        assert set(spec.get("required", {})) <= set(node["inputs"]), nid


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    _use_our_nodes()
    monkeypatch.setenv("OVI_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("OVI_INPUT_DIR", str(tmp_path / "input"))
    return tmp_path


def _handle(path: str):
    from nodes._types import OviModel
    from ovi_core.model.loader import load_fusion

    module = load_fusion(path, device="cpu", dtype=torch.float32)
    return OviModel(module=module, device=torch.device("cpu"), dtype=torch.float32, memory_mode="gpu", path=path,
                    version="1.0", target_area=64 * 64)


def _inputs():
    g = torch.Generator().manual_seed(0)
    ctx = [torch.randn(5, 32, generator=g)]
    return torch.randn(1, 48, 3, 4, 4, generator=g), torch.randn(1, 15, 20, generator=g), torch.tensor([600.0]), ctx, ctx


def test_train_node_then_loader_node(dirs, monkeypatch):
    from train_utils import write_latent_dataset, write_tiny_model

    import nodes.lora as lora_node

    shown = []
    monkeypatch.setattr(lora_node._comfy, "show_text", lambda node_id, text, **kw: shown.append((node_id, text)))

    from nodes.lora import OviLoraLoader, OviTrainLoRA
    from ovi_core.lora.files import load_lora
    from ovi_core.lora.model import LoRAModel

    model_path = write_tiny_model(str(dirs / "tiny.safetensors"))
    ds = write_latent_dataset(str(dirs / "input" / "prepared"))
    # ComfyUI executes every node under torch.inference_mode: the loaded weights are inference tensors
    with torch.inference_mode():
        handle = _handle(model_path)
    inp = _inputs()
    with torch.no_grad():
        ref = handle.module(*inp)
    with torch.inference_mode():
        trained, path, curve = OviTrainLoRA().train(handle, "prepared", 3, 1e-2, 4, "all attention (paper)",
                                                    "my_lora", warmup_steps=0, save_every=2,
                                                    gradient_checkpointing=False, unique_id="7")
    assert path == str(dirs / "models" / "loras" / "my_lora.safetensors") and os.path.isfile(path)
    assert curve.shape == (1, 256, 512, 3) and curve.dtype == torch.float32
    assert isinstance(trained.module, LoRAModel) and trained.version == "1.0"
    metrics = dirs / "output" / "ovi_lora_training" / "my_lora" / "metrics.jsonl"
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
    # the loss reaches the node while training runs: the first and the last step always, in between at most 1/s
    assert shown[0] == ("7", f"step 1/3, loss {losses[0]:.4f}") and shown[-1] == ("7", f"step 3/3, loss {losses[2]:.4f}")
    assert os.path.isdir(ds)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ref, handle.module(*inp), strict=True))  # base untouched
        out_trained = trained.module(*inp)
    assert not torch.equal(out_trained[0], ref[0])

    loader = OviLoraLoader()
    assert "my_lora.safetensors" in OviLoraLoader.INPUT_TYPES()["required"]["lora_name"][0]
    (same,) = loader.apply(handle, "my_lora.safetensors", 0.0)
    assert same is handle
    (half,) = loader.apply(handle, "my_lora.safetensors", 0.5)
    net = load_lora(handle.module, path, strength=0.5)
    try:
        with torch.no_grad():
            expect = handle.module(*inp)
    finally:
        net.detach()
    with torch.no_grad():
        got = half.module(*inp)
    assert all(torch.equal(a, b) for a, b in zip(expect, got, strict=True))
    with pytest.raises(FileNotFoundError):
        loader.apply(handle, "missing.safetensors", 1.0)


def test_loss_text_is_sent_at_a_bounded_rate(monkeypatch):
    import nodes.lora as lora_node

    shown, bar = [], []
    monkeypatch.setattr(lora_node._comfy, "show_text", lambda node_id, text, **kw: shown.append(text))
    t = [0.0]
    update = lora_node._loss_progress(lambda s, n: bar.append(s), "3", "Ovi: skipped clips: x.mp4 (too short)",
                                      interval=1.0, clock=lambda: t[0])
    for step in range(1, 11):
        update(step, 10, 1.0 / step)
        t[0] += 0.3  # 0.3 s per step: a text at most every 4th step, plus the last
    assert bar == list(range(1, 11))  # the progress bar still moves every step
    assert [x.splitlines()[1] for x in shown] == ["step 1/10, loss 1.0000", "step 5/10, loss 0.2000",
                                                  "step 9/10, loss 0.1111", "step 10/10, loss 0.1000"]
    assert all(x.splitlines()[0] == "Ovi: skipped clips: x.mp4 (too short)" for x in shown)  # the note stays


def test_train_node_says_what_the_dataset_folder_must_hold(dirs):
    from train_utils import write_tiny_model

    from nodes.lora import OviTrainLoRA
    from ovi_core.training.dataset import EXAMPLE_DATASET

    handle = _handle(write_tiny_model(str(dirs / "tiny.safetensors")))
    with pytest.raises(FileNotFoundError) as e:
        OviTrainLoRA().train(handle, "ovi_dataset", 1, 1e-4, 4, "all attention (paper)", "x")
    msg = str(e.value)
    for part in ("does not exist", str(dirs / "input"), "audio track", "at least 5.04 s (121 frames at 24 fps)",
                 "same-name .txt caption", "<S>...<E>", EXAMPLE_DATASET):
        assert part in msg, part
    (dirs / "input" / "empty").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no clips and no index.json"):
        OviTrainLoRA().train(handle, "empty", 1, 1e-4, 4, "all attention (paper)", "x", frames=9)
    assert not (dirs / "output" / "ovi_lora_training").exists()  # refused before any work


def test_train_node_needs_codecs_for_raw_clips(dirs):
    from train_utils import write_tiny_model

    from nodes.lora import OviTrainLoRA

    handle = _handle(write_tiny_model(str(dirs / "tiny.safetensors")))
    (dirs / "input" / "raw").mkdir(parents=True)
    (dirs / "input" / "raw" / "clip.mp4").write_bytes(b"")  # a clip to prepare (read only once codecs are given)
    with pytest.raises(ValueError, match="not prepared"):
        OviTrainLoRA().train(handle, "raw", 1, 1e-4, 4, "all attention (paper)", "x")
    with pytest.raises(ValueError, match="output_name"):
        OviTrainLoRA().train(handle, "raw", 1, 1e-4, 4, "all attention (paper)", "../evil")
