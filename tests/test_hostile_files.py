"""Hostile and damaged files: a planted pickle never runs on any resume or load path, and every tensor or
JSON file we read (LoRAs, prepared latents, index.json, checkpoints, metadata) fails with a message that names
the file and what is wrong."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys

import pytest
import torch
from safetensors.torch import save_file
from train_utils import write_latent_dataset, write_tiny_model

from ovi_core.io import checkpoints as ck
from ovi_core.training.checkpoint import latest_checkpoint
from ovi_core.training.config import TrainConfig
from ovi_core.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Payload:
    """Unpickling this writes a marker file: what a planted checkpoint would do with ``weights_only=False``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def plant(path, marker) -> None:
    torch.save({"step": 2, "payload": Payload(str(marker))}, str(path))


def test_the_payload_is_real(tmp_path):
    marker = tmp_path / "ran"
    plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the unsafe load this project must never do
    assert marker.read_text() == "code ran"


def test_no_unsafe_deserialisation_anywhere_in_the_project():
    """Every torch.load passes weights_only=True; no pickle/np.load(allow_pickle)/weights_only=False."""
    bad = []
    for top in ("ovi_core", "nodes", "tools", "bench", "__init__.py"):
        base = os.path.join(ROOT, top)
        files = [base] if base.endswith(".py") else [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs
                                                     if f.endswith(".py")]
        for path in files:
            if not os.path.isfile(path):
                continue
            src = open(path, encoding="utf-8").read()
            for m in re.finditer(r"torch\.load\(", src):
                depth, i = 1, m.end()
                while depth and i < len(src):  # the call's arguments, up to its closing parenthesis
                    depth += {"(": 1, ")": -1}.get(src[i], 0)
                    i += 1
                if "weights_only=True" not in src[m.end():i]:
                    bad.append(f"{path}: torch.load without weights_only=True")
            for pat in (r"weights_only\s*=\s*False", r"\bpickle\.loads?\(", r"allow_pickle\s*=\s*True",
                        r"^\s*import (c?pickle|dill|joblib)\b", r"\bload_custom_state\("):
                if re.search(pat, src, flags=re.M):
                    bad.append(f"{path}: {pat}")
    assert not bad, bad


# ---------------------------------------------------------------------------------------------------
# Resume paths: the CLI and the OviTrainLoRA node
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run with a checkpoint at step 2, and its config file."""
    d = tmp_path_factory.mktemp("hostile")
    files = {"tiny": write_tiny_model(str(d / "tiny.safetensors")), "ds": write_latent_dataset(str(d / "ds"))}
    cfg = TrainConfig(dataset=files["ds"], model=files["tiny"], output_dir=str(d / "run"), steps=3, rank=2,
                      mixed_precision="no", save_every=2, seed=1)
    t = Trainer(cfg)
    try:
        t.train(stop_after=2)
    finally:
        t.close()
    return {"out": d / "run", "cfg": cfg, **files}


def _cli_train(cfg: TrainConfig, tmp_path, capsys) -> tuple[int, str]:
    from ovi_core.cli.main import main

    p = tmp_path / "train.json"
    p.write_text(json.dumps(cfg.to_dict()))
    rc = main(["train", str(p)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", ["legacy_state", "legacy_rng", "tampered_tree"])
def test_planted_checkpoint_never_runs_on_cli_resume(run, tmp_path, capsys, case):
    out = tmp_path / "run"
    shutil.copytree(run["out"], out)
    ckdir = latest_checkpoint(str(out))
    marker = tmp_path / "ran"
    if case == "legacy_state":  # a checkpoint folder in the first format, state.pt planted
        for f in ("state.json", "state.safetensors"):
            os.remove(os.path.join(ckdir, f))
        plant(os.path.join(ckdir, "state.pt"), marker)
    elif case == "legacy_rng":
        for f in ("rng-rank0.json", "rng-rank0.safetensors"):
            os.remove(os.path.join(ckdir, f))
        plant(os.path.join(ckdir, "rng-rank0.pt"), marker)
    else:  # the JSON tree names a tensor that is not there / a tag we do not know
        p = os.path.join(ckdir, "state.json")
        doc = json.load(open(p))
        doc["tree"]["step"] = {"$object": "os.system"}
        json.dump(doc, open(p, "w"))
    # the model path is missing: an error about it would mean the weights were reached first
    cfg = TrainConfig(**{**run["cfg"].to_dict(), "output_dir": str(out), "model": str(tmp_path / "absent.sft")})
    rc, err = _cli_train(cfg, tmp_path, capsys)
    assert rc == 2 and not marker.exists()
    assert os.path.basename(ckdir) in err and "absent.sft" not in err
    if case.startswith("legacy"):
        assert "refused" in err and "Nothing in it was run" in err


def test_planted_pickle_beside_a_current_checkpoint_is_never_opened(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run["out"], out)
    ckdir = latest_checkpoint(str(out))
    marker = tmp_path / "ran"
    plant(os.path.join(ckdir, "state.pt"), marker)
    plant(os.path.join(ckdir, "rng-rank0.pt"), marker)
    t = Trainer(TrainConfig(**{**run["cfg"].to_dict(), "output_dir": str(out)}))
    try:
        res = t.train()
    finally:
        t.close()
    assert res.steps == 3 and not marker.exists()


def _use_our_nodes() -> None:
    n = sys.modules.get("nodes")
    if n is not None and not os.path.abspath(getattr(n, "__file__", "") or "").startswith(ROOT + os.sep):
        for k in [k for k in sys.modules if k == "nodes" or k.startswith("nodes.")]:
            del sys.modules[k]
    if sys.path[0] != ROOT:
        sys.path.insert(0, ROOT)


def test_planted_checkpoint_never_runs_in_the_train_node(run, tmp_path, monkeypatch):
    """OviTrainLoRA resumes by itself from output/ovi_lora_training/<output_name>/checkpoints."""
    _use_our_nodes()
    monkeypatch.setenv("OVI_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("OVI_INPUT_DIR", str(tmp_path / "input"))
    from nodes._types import OviModel
    from nodes.lora import OviTrainLoRA
    from ovi_core.model.loader import load_fusion

    shutil.copytree(run["ds"], tmp_path / "input" / "prepared")
    run_dir = tmp_path / "output" / "ovi_lora_training" / "my_lora"
    ckdir = run_dir / "checkpoints" / "step-000002"
    ckdir.mkdir(parents=True)
    marker = tmp_path / "ran"
    plant(ckdir / "state.pt", marker)
    plant(ckdir / "rng-rank0.pt", marker)
    handle = OviModel(module=load_fusion(run["tiny"], device="cpu", dtype=torch.float32), device=torch.device("cpu"),
                      dtype=torch.float32, memory_mode="gpu", path=run["tiny"], version="1.0", target_area=64 * 64)
    with torch.inference_mode(), pytest.raises(ValueError, match="refused") as e:
        OviTrainLoRA().train(handle, "prepared", 3, 1e-3, 2, "all attention (paper)", "my_lora", warmup_steps=0)
    assert not marker.exists() and "state.pt" in str(e.value)


def test_planted_pickle_as_a_lora_or_model_file_never_runs(run, tmp_path, capsys):
    from ovi_core.cli.main import main
    from ovi_core.lora.files import load_lora
    from ovi_core.model.loader import load_fusion

    marker = tmp_path / "ran"
    for name in ("evil_lora.pt", "evil.pth"):
        plant(tmp_path / name, marker)
    model = load_fusion(run["tiny"])
    with pytest.raises(ValueError, match="weights_only"):
        load_lora(model, str(tmp_path / "evil_lora.pt"))
    assert main(["inspect", str(tmp_path / "evil.pth")]) == 1
    assert "evil.pth" in capsys.readouterr().out
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Damaged tensor files: every reader names the file and the problem
# ---------------------------------------------------------------------------------------------------


def _damage(good: str, bad: str, kind: str) -> str:
    data = open(good, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    if kind == "garbage":
        out = b"\x00\xff" * 64
    elif kind == "truncated":
        out = data[: len(data) - 7]
    elif kind == "bad_json":
        out = data[:8] + b"{" + b"x" * (n - 1) + data[8 + n:]
    elif kind == "not_an_object":
        h = json.dumps([1, 2]).encode().ljust(n)
        out = data[:8] + h + data[8 + n:]
    elif kind == "bad_offsets":
        k = next(k for k in header if k != "__metadata__")
        header[k]["data_offsets"] = ["a", 3]
        h = json.dumps(header).encode()
        out = struct.pack("<Q", len(h)) + h + data[8 + n:]
    elif kind == "overlapping":  # a header that passes our checks but that safetensors itself refuses
        ks = [k for k in header if k != "__metadata__"]
        header[ks[1]]["data_offsets"] = header[ks[0]]["data_offsets"]
        h = json.dumps(header).encode()
        out = struct.pack("<Q", len(h)) + h + data[8 + n:]
    else:
        raise AssertionError(kind)
    open(bad, "wb").write(out)
    return bad


KINDS = ["garbage", "truncated", "bad_json", "not_an_object", "bad_offsets", "overlapping"]


@pytest.fixture(scope="module")
def lora_file(run):
    from ovi_core.lora.network import LoRANetwork
    from ovi_core.lora.targets import LoRAConfig
    from ovi_core.model.loader import load_fusion

    net = LoRANetwork.for_model(load_fusion(run["tiny"]), LoRAConfig(rank=2), seed=0)
    return net.save(os.path.join(os.path.dirname(run["tiny"]), "good_lora.safetensors"), base_version="1.0")


def _no_bare_library_error(e: BaseException) -> None:
    assert isinstance(e, (ValueError, FileNotFoundError)), type(e)
    assert "SafetensorError" not in type(e).__name__ and "JSONDecodeError" not in type(e).__name__


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_lora_file(run, lora_file, tmp_path, kind):
    from ovi_core.lora.files import load_lora
    from ovi_core.lora.model import lora_info
    from ovi_core.model.loader import load_fusion

    bad = _damage(lora_file, str(tmp_path / "style.safetensors"), kind)
    for call in (lambda: load_lora(load_fusion(run["tiny"]), bad), lambda: lora_info(bad)):
        with pytest.raises(ValueError) as e:
            call()
        _no_bare_library_error(e.value)
        assert "style.safetensors" in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_prepared_clip(run, tmp_path, kind):
    from ovi_core.training.dataset import LatentDataset

    ds = tmp_path / "ds"
    shutil.copytree(run["ds"], ds)
    _damage(str(ds / "clip1.safetensors"), str(ds / "clip1.safetensors"), kind)
    with pytest.raises(ValueError) as e:
        LatentDataset(str(ds))
    _no_bare_library_error(e.value)
    assert "clip1.safetensors" in str(e.value)


@pytest.mark.parametrize("kind", ["truncated", "overlapping", "bad_json"])
@pytest.mark.parametrize("file", ["state.safetensors", "rng-rank0.safetensors", "lora.safetensors"])
def test_damaged_checkpoint_tensors(run, tmp_path, kind, file):
    out = tmp_path / "run"
    shutil.copytree(run["out"], out)
    ckdir = latest_checkpoint(str(out))
    _damage(os.path.join(ckdir, file), os.path.join(ckdir, file), kind)
    t = None
    with pytest.raises(ValueError) as e:
        t = Trainer(TrainConfig(**{**run["cfg"].to_dict(), "output_dir": str(out)}))
        t.train()
    if t is not None:
        t.close()
    _no_bare_library_error(e.value)
    assert os.path.join(os.path.basename(ckdir), file) in str(e.value)


def test_prepared_clip_with_wrong_tensors(run, tmp_path):
    from ovi_core.training.dataset import LatentDataset

    ds = tmp_path / "ds"
    shutil.copytree(run["ds"], ds)
    save_file({"video_latent": torch.zeros(48, 1, 2, 2), "audio_latent": torch.zeros(3, 20)}, str(ds / "clip0.safetensors"))
    with pytest.raises(ValueError, match=r"clip0\.safetensors.*lacks the tensors \['text_embedding'\]"):
        LatentDataset(str(ds))
    save_file({"video_latent": torch.zeros(16, 1, 2, 2), "audio_latent": torch.zeros(3, 20),
               "text_embedding": torch.zeros(2, 8)}, str(ds / "clip0.safetensors"))
    with pytest.raises(ValueError, match=r"clip0\.safetensors.*\[48, F, h, w\]"):
        LatentDataset(str(ds))


@pytest.mark.parametrize("index, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected an object"),
    ('{"items": {"a": 1}}', "'items' is not a list"),
    ('{"items": [{"file": "../../etc/secret.safetensors", "name": "x"}]}', "a file name in the dataset folder"),
    ('{"items": [7]}', "must be an object"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_damaged_dataset_index(run, tmp_path, index, match):
    from ovi_core.training.dataset import LatentDataset

    ds = tmp_path / "ds"
    shutil.copytree(run["ds"], ds)
    (ds / "index.json").write_bytes(index if isinstance(index, bytes) else index.encode())
    with pytest.raises(ValueError, match=match) as e:
        LatentDataset(str(ds))
    _no_bare_library_error(e.value)
    assert "index.json" in str(e.value)


# ---------------------------------------------------------------------------------------------------
# Metadata is user input
# ---------------------------------------------------------------------------------------------------


def _with_meta(src: str, dst: str, meta: dict) -> str:
    from safetensors.torch import load_file

    save_file(load_file(src), dst, metadata=meta)
    return dst


@pytest.mark.parametrize("meta, match", [
    ({"ovi.target_area": "-5"}, r"ovi\.target_area='-5'.*whole number between 1024"),
    ({"ovi.target_area": "abc"}, r"ovi\.target_area='abc'"),
    ({"ovi.target_area": "1e400"}, r"ovi\.target_area"),
    ({"ovi.target_area": str(10**12)}, r"ovi\.target_area"),
    ({"ovi.version": "9.9"}, r"ovi\.version='9\.9'.*one of"),
])
def test_bad_fusion_metadata_is_a_clear_error(run, tmp_path, meta, match):
    from ovi_core.pipeline import fusion_file_info

    path = _with_meta(run["tiny"], str(tmp_path / "mine.safetensors"), meta)
    with pytest.raises(ValueError, match=match) as e:
        fusion_file_info(path)
    assert "mine.safetensors" in str(e.value) and "metadata" in str(e.value)


def test_good_fusion_metadata_is_read(run, tmp_path):
    from ovi_core.pipeline import fusion_file_info

    path = _with_meta(run["tiny"], str(tmp_path / "mine.safetensors"), {"ovi.target_area": " 4096 ", "ovi.version": "1.1"})
    assert fusion_file_info(path) == {"version": "1.1", "target_area": 4096}


def test_bad_version_metadata_stops_training_before_the_model_loads(run, tmp_path):
    path = _with_meta(run["tiny"], str(tmp_path / "mine.safetensors"), {"ovi.version": "<script>"})
    cfg = TrainConfig(**{**run["cfg"].to_dict(), "output_dir": str(tmp_path / "o"), "model": path})
    with pytest.raises(ValueError, match=r"mine\.safetensors.*ovi\.version"):
        Trainer(cfg)


# ---------------------------------------------------------------------------------------------------
# The LoRA loader takes LoRAs only
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from ovi_core.tiny import write_tiny_weights

    return write_tiny_weights(str(tmp_path_factory.mktemp("w")))


@pytest.mark.parametrize("key, looks", [("bigvgan", "BigVGAN vocoder"), ("mmaudio-vae", "MMAudio"),
                                        ("umt5", "UMT5"), ("fusion", "Ovi fusion DiT"), ("wan-vae", "Wan2.2 VAE")])
def test_lora_loader_refuses_other_models(run, tiny_weights, key, looks):
    from ovi_core.lora.files import load_lora
    from ovi_core.model.loader import load_fusion

    with pytest.raises(ck.CheckpointError, match=rf"Not a LoRA file: .* looks like {looks}"):
        load_lora(load_fusion(run["tiny"]), tiny_weights[key])


def test_lora_loader_node_refuses_the_vocoder(run, tiny_weights, tmp_path, monkeypatch):
    _use_our_nodes()
    monkeypatch.setenv("OVI_MODELS_DIR", str(tmp_path / "models"))
    from nodes._types import OviModel
    from nodes.lora import OviLoraLoader
    from ovi_core.model.loader import load_fusion

    (tmp_path / "models" / "loras").mkdir(parents=True)
    shutil.copy(tiny_weights["bigvgan"], tmp_path / "models" / "loras" / "best_netG.pt")
    handle = OviModel(module=load_fusion(run["tiny"]), device=torch.device("cpu"), dtype=torch.float32,
                      memory_mode="gpu", path=run["tiny"], version="1.0", target_area=64 * 64)
    with pytest.raises(ValueError, match="Not a LoRA file: .*best_netG.pt.* looks like BigVGAN"):
        OviLoraLoader().apply(handle, "best_netG.pt", 1.0)


def test_vocoder_alpha_tensors_are_not_read_as_lora_alphas():
    from ovi_core.lora.network import parse_lora_state_dict

    with pytest.raises(ValueError, match="unexpected keys"):
        parse_lora_state_dict({"ups.0.weight": torch.zeros(2, 2), "activations.0.act.alpha": torch.zeros(8)})


def test_fsdp_state_that_accelerate_would_unpickle_is_refused(tmp_path):
    from ovi_core.training.checkpoint import check_accelerate_dir

    d = tmp_path / "accelerate"
    d.mkdir()
    (d / "optimizer.bin").write_bytes(b"")
    check_accelerate_dir(str(d))  # full state dicts: read by accelerate with weights_only=True
    for name in (".metadata", "custom_checkpoint_0.pkl"):
        (d / name).write_bytes(b"")
        with pytest.raises(ValueError, match="are pickles and are not loaded"):
            check_accelerate_dir(str(d))
        (d / name).unlink()
    with pytest.raises(FileNotFoundError):
        check_accelerate_dir(str(tmp_path / "absent"))
