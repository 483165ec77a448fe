"""Ovi inside ComfyUI's model management (issue #20), the parts that need no ComfyUI:

* ``nodes/`` never assigns to an attribute of a ComfyUI module (the ``free_memory`` wrapper that broke every model
  load in ComfyUI 0.33 must not come back), checked with ``ast``; the checker itself is shown to catch that wrapper;
* the activation estimate (``ovi_core.runtime.estimate``) against the measured peaks and the placement it picks;
* run caches (RoPE tables, text k/v) are dropped when a run ends;
* the loaders' ``memory_mode``: ``auto`` is the default of new nodes, saved values still load, bad values are refused
  before any weights load.
"""

from __future__ import annotations

import ast
import os

import pytest
import torch
from comfy_ast import NODES, assignments_to_comfy, module_getters, parse_nodes

from ovi_core.runtime import estimate
from ovi_core.runtime.estimate import GIB, activation_bytes, dit_tokens, dit_tokens_for_area, plan_dit

# --------------------------------------------------------------------------------------------------------------
# no monkeypatching
# --------------------------------------------------------------------------------------------------------------

# nodes/_comfy.py before issue #20 (trimmed): the wrapper that replaced ComfyUI's free_memory
OLD_HOOK = '''
def _try_import(name):
    return __import__(name, fromlist=["_"])

def model_management():
    return _try_import("comfy.model_management")

def install_memory_hook():
    mm = model_management()
    original = mm.free_memory
    def free_memory(memory_required, device, keep_loaded=[]):
        return original(memory_required, device, keep_loaded)
    free_memory._ovi_wrapped = True
    mm.free_memory = free_memory
'''


def test_nodes_never_assign_to_comfy_modules():
    trees = parse_nodes()
    getters = module_getters(trees)
    assert getters.get("model_management") == "comfy.model_management"  # the checker sees the adapter's getter
    hits = []
    for name in trees:
        with open(os.path.join(NODES, name), encoding="utf-8") as f:
            hits += assignments_to_comfy(f.read(), getters, filename=name)
    assert hits == []


@pytest.mark.parametrize("src", [
    OLD_HOOK,
    "import comfy.model_management\ncomfy.model_management.free_memory = print\n",
    "import comfy.model_management as mm\nmm.free_memory = print\n",
    "from comfy import model_management\nmodel_management.free_memory = print\n",
    "from comfy import model_management as m\nm.vram_state += 1\n",
    "import comfy.model_management\nsetattr(comfy.model_management, 'free_memory', print)\n",
    "def f():\n    mm = __import__('comfy.model_management', fromlist=['_'])\n    a = mm\n    a.x, b = 1, 2\n",
    "import comfy.ops\ndel comfy.ops.manual_cast\n",
])
def test_checker_catches_assignments(src):
    trees = {"old": ast.parse(OLD_HOOK)}
    assert assignments_to_comfy(src, module_getters(trees))


def test_checker_leaves_other_assignments_alone():
    src = ("import comfy.model_patcher as mp\n"
           "p = object()\n"
           "p.patcher = mp.ModelPatcher(None, 'cpu', 'cpu')\n"
           "p.patcher.model.x = 1\n"
           "setattr(p, 'y', 2)\n")
    assert assignments_to_comfy(src) == []


# --------------------------------------------------------------------------------------------------------------
# activation estimate and placement
# --------------------------------------------------------------------------------------------------------------

# measured activation peaks (GiB, B=2 with the text k/v cache) at video tokens L (GPU_REVIEW §3)
MEASURED = [(15004, 3.16), (27900, 5.25), (27280, 5.15), (54900, 9.64)]


@pytest.mark.parametrize("video_tokens,peak", MEASURED)
def test_activation_formula_reproduces_the_measured_peaks(video_tokens, peak):
    got = activation_bytes(video_tokens, rows=2) / GIB
    assert abs(got - peak) < 0.02 * peak  # the fit is within 2 %; plan_dit adds MARGIN (1 GiB) on top
    assert activation_bytes(video_tokens, rows=2) + estimate.MARGIN > peak * GIB
    assert activation_bytes(video_tokens, rows=1) < activation_bytes(video_tokens, rows=2)


def test_tokens_of_the_official_sizes():
    assert dit_tokens(704, 704, version="1.0") == 31 * 22 * 22 + 157
    assert dit_tokens(960, 960, version="1.1-10s") == 61 * 30 * 30 + 314
    assert dit_tokens_for_area(960 * 960, version="1.1") == dit_tokens(960, 960, version="1.1")
    with pytest.raises(ValueError):
        activation_bytes(100, rows=0)


FULL = dict(weight_bytes=int(21.72 * GIB), block_bytes=int(0.680 * GIB), num_blocks=30)


def test_plan_loads_the_whole_dit_when_it_fits():
    tokens = dit_tokens(704, 704, version="1.0")
    p = plan_dit(79 * GIB, tokens=tokens, **FULL)
    assert (p.mode, p.fits) == ("gpu", True)
    assert p.need_bytes == FULL["weight_bytes"] + activation_bytes(tokens) + estimate.MARGIN


@pytest.mark.parametrize("free_gib", [12, 16, 23.5])
def test_plan_streams_blocks_when_the_dit_does_not_fit(free_gib):
    tokens = dit_tokens(960, 960, version="1.1")
    free = int(free_gib * GIB)
    p = plan_dit(free, tokens=tokens, **FULL)
    assert p.mode == "block_swap" and p.fits
    assert p.need_bytes <= free < p.need_bytes + FULL["block_bytes"] or p.blocks_on_gpu == FULL["num_blocks"] - 1
    more = plan_dit(free + 2 * GIB, tokens=tokens, **FULL)
    assert more.blocks_on_gpu >= p.blocks_on_gpu


def test_plan_on_a_32gb_card():
    free = int(31.2 * GIB)  # usable on a 32 GB card
    assert plan_dit(free, tokens=dit_tokens(960, 960, version="1.1"), **FULL).mode == "gpu"
    assert plan_dit(free, tokens=dit_tokens(960, 960, version="1.1-10s"), **FULL).mode == "block_swap"


def test_plan_without_room_and_with_lowvram():
    tokens = dit_tokens(960, 960, version="1.1-10s")
    tight = plan_dit(4 * GIB, tokens=tokens, **FULL)
    assert (tight.mode, tight.blocks_on_gpu, tight.fits) == ("block_swap", 0, False)
    low = plan_dit(200 * GIB, tokens=tokens, allow_full=False, **FULL)
    assert low.mode == "block_swap" and low.blocks_on_gpu == FULL["num_blocks"] - 1


# --------------------------------------------------------------------------------------------------------------
# run caches
# --------------------------------------------------------------------------------------------------------------


def test_rope_and_text_caches_are_dropped_after_a_run():
    from nodes import _patcher
    from nodes._types import OviModel
    from ovi_core.model import rope
    from ovi_core.model.config import TINY
    from ovi_core.model.fusion import OviFusionModel

    model = OviFusionModel(TINY, device="cpu", dtype=torch.float32)
    handle = OviModel(module=model, device=torch.device("cpu"), dtype=torch.float32, version="1.0",
                      target_area=64 * 64)
    rope.clear_caches()
    with _patcher.use_model(handle) as dit, dit.cache_text_embeddings():
        assert dit is model
        rope.video_rope_table((2, 2, 2), 16, torch.device("cpu"))
        model._text_cache["k"] = ("ctx", (), {})
        assert rope.cached_tables() > 0
        _patcher.clear_caches(dit)  # what ComfyUI's unload runs (the patcher's on_detach callback)
        assert model.text_cache_stats()["entries"] == 0 and rope.cached_tables() == 0
        rope.video_rope_table((2, 2, 2), 16, torch.device("cpu"))
    assert rope.cached_tables() == 0


def test_lora_networks_go_to_the_offload_device_when_the_run_ends(tmp_path):
    """LoRA networks follow the compute device during a run (the latent's device) and are moved to the patcher's
    offload device afterwards, so none stays on the GPU. The offload device here is ``meta`` (a stand-in patcher):
    the only device besides the CPU a CPU-only test can see a move to."""
    import types

    from nodes import _patcher
    from nodes._types import OviModel
    from ovi_core.lora.model import lora_model
    from ovi_core.lora.network import LoRANetwork
    from ovi_core.lora.targets import LoRAConfig
    from ovi_core.model.config import TINY
    from ovi_core.model.loader import random_fusion

    model = random_fusion(TINY, seed=0)
    net = LoRANetwork.for_model(model, LoRAConfig(rank=2))
    with torch.no_grad():
        for i, prm in enumerate(net.parameters()):
            prm.copy_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(i)) * 0.05)
    view = lora_model(model, net.save(tmp_path / "l.safetensors"), strength=1.0)
    handle = OviModel(module=view, device=torch.device("cpu"), dtype=torch.float32, version="1.0",
                      target_area=64 * 64, memory_mode="offload",
                      patcher=types.SimpleNamespace(offload_device=torch.device("meta")))
    g = torch.Generator().manual_seed(1)
    inp = (torch.randn(1, 48, 3, 4, 4, generator=g), torch.randn(1, 15, 20, generator=g), torch.tensor([700.0]),
           [torch.randn(5, 32, generator=g)], [torch.randn(5, 32, generator=g)])
    with torch.no_grad():
        plain = model(*inp)
        with _patcher.use_model(handle) as dit:
            lora = dit(*inp)
            assert {p.device.type for n, _ in view.loras for p in n.parameters()} == {"cpu"}
    assert not torch.equal(plain[0], lora[0])  # the LoRA was active
    assert {p.device.type for n, _ in view.loras for p in n.parameters()} == {"meta"}


# --------------------------------------------------------------------------------------------------------------
# memory_mode choices
# --------------------------------------------------------------------------------------------------------------


def test_memory_mode_auto_is_the_new_default_and_saved_values_stay_valid():
    from nodes import loaders

    for cls in (loaders.OviFusionModelLoader, loaders.OviTextEncoderLoader, loaders.OviVideoVAELoader,
                loaders.OviAudioVAELoader):
        choices, opts = cls.INPUT_TYPES()["required"]["memory_mode"]
        assert opts["default"] == "auto" and choices[0] == "auto"
        assert {"offload", "gpu"} <= set(choices)
    assert "block_swap" in loaders.OviFusionModelLoader.INPUT_TYPES()["required"]["memory_mode"][0]


def test_bad_memory_mode_is_refused_before_loading():
    from nodes import loaders

    with pytest.raises(ValueError, match="memory_mode"):
        loaders.OviVideoVAELoader().load("does-not-exist.pth", "auto", "block_swap")
    with pytest.raises(ValueError, match="memory_mode"):
        loaders.OviFusionModelLoader().load("does-not-exist.safetensors", "auto", "auto", "fast", 10)


# --------------------------------------------------------------------------------------------------------------
# the command line's auto mode (no ComfyUI)
# --------------------------------------------------------------------------------------------------------------


def test_cli_auto_plan_from_free_memory():
    from ovi_core.model.config import TINY
    from ovi_core.model.fusion import OviFusionModel
    from ovi_core.runtime.memory import auto_plan, dit_layout, dit_on_device

    model = OviFusionModel(TINY, device="cpu", dtype=torch.float32)
    weights, block, n = dit_layout(model)
    assert n == TINY.video.num_layers and 0 < n * block < weights
    tokens = 1000
    act = activation_bytes(tokens, rows=2)
    assert auto_plan(model, weights + act + estimate.MARGIN, tokens).mode == "gpu"
    short = auto_plan(model, weights + act + estimate.MARGIN - 1, tokens)
    assert short.mode == "block_swap" and short.blocks_on_gpu < n
    assert auto_plan(model, 0, tokens).blocks_on_gpu == 0
    assert auto_plan(model, weights + act + estimate.MARGIN, tokens, rows=1).mode == "gpu"
    with dit_on_device(model, "cpu", memory_mode="auto") as m:  # on CPU: a plain placement, no tokens needed
        assert m is model


def test_cli_default_memory_mode_is_auto():
    from ovi_core.cli.main import build_parser

    args = build_parser().parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4"])
    assert args.memory_mode == "auto"


# --------------------------------------------------------------------------------------------------------------
# the DiT's placement inside ComfyUI (ComfyUI's model_management stood in for: free memory and VRAM state)
# --------------------------------------------------------------------------------------------------------------


class _StandInMM:
    """What ``_patcher.plan`` reads of ``comfy.model_management``; records the ``free_memory`` requests."""

    def __init__(self, free: int, state: str = "NORMAL_VRAM"):
        import types

        self.free, self.requests = free, []
        self.vram_state = types.SimpleNamespace(name=state)

    def free_memory(self, memory_required, device, keep_loaded=(), for_dynamic=False, pins_required=0,
                    ram_required=0):
        self.requests.append(int(memory_required))
        return []

    def get_free_memory(self, dev=None, torch_free_too=False):
        return self.free

    def extra_reserved_memory(self):
        return 400 << 20


@pytest.mark.parametrize("state,extra,expect", [
    ("NORMAL_VRAM", estimate.MARGIN, "gpu"),  # whole DiT + activations + margin fit
    ("NORMAL_VRAM", 0, "block_swap"),  # 1 GiB short: stream
    ("LOW_VRAM", 100 * GIB, "block_swap"),  # --lowvram always streams
    ("NO_VRAM", 100 * GIB, "block_swap"),  # --novram streams with no resident block
    ("HIGH_VRAM", 0, "gpu"),  # --gpu-only / --highvram: whole
])
def test_auto_placement_follows_comfyui(state, extra, expect):
    from nodes import _patcher
    from nodes._types import OviModel
    from ovi_core.model.config import TINY
    from ovi_core.model.fusion import OviFusionModel
    from ovi_core.runtime.memory import dit_layout

    model = OviFusionModel(TINY, device="meta", dtype=torch.bfloat16)
    handle = OviModel(module=model, device=torch.device("cuda"), dtype=torch.bfloat16, version="1.1",
                      target_area=960 * 960, memory_mode="auto")
    weights, _, n = dit_layout(model)
    act = activation_bytes(dit_tokens_for_area(960 * 960, version="1.1"))
    mm = _StandInMM(weights + act + extra, state)
    mode, blocks, got_act = _patcher.plan(handle, mm)
    assert (mode, got_act) == (expect, act)
    if state == "NO_VRAM":
        assert blocks == 0
    if state in ("NORMAL_VRAM", "LOW_VRAM"):
        assert mm.requests and mm.requests[0] >= weights + act  # ComfyUI was asked for weights + activations
    explicit = OviModel(module=model, device=torch.device("cuda"), dtype=torch.bfloat16, version="1.1",
                        target_area=960 * 960, memory_mode="offload")
    assert _patcher.plan(explicit, _StandInMM(0, "NORMAL_VRAM"))[0] == "offload"  # a saved value is obeyed
    assert _patcher.plan(explicit, _StandInMM(0, "NO_VRAM"))[:2] == ("block_swap", 0)  # ComfyUI loads nothing
    # reference mode (DreamID-Omni): four rows per forward and the reference tails' tokens are budgeted too
    tails = 2 * 3 * 5 + 31
    ref_act = _patcher.plan(handle, _StandInMM(100 * GIB, state), rows=4, extra_tokens=tails)[2]
    assert ref_act == activation_bytes(dit_tokens_for_area(960 * 960, version="1.1") + tails, rows=4) > act


@pytest.mark.parametrize("mode,state,full", [
    ("auto", "NORMAL_VRAM", False),  # ComfyUI may load the comfy.ops-built DiT partially
    ("auto", "NO_VRAM", False),  # --novram: ComfyUI streams every layer itself
    ("offload", "NORMAL_VRAM", True),  # a saved offload: whole
])
def test_dit_on_comfy_ops_is_handed_to_comfyui_partial_loading(monkeypatch, mode, state, full):
    """Built on ComfyUI-style operations, the DiT in ``auto`` mode goes to ``load_models_gpu`` with its activation
    estimate and without ``force_full_load``, whatever the free memory: ComfyUI decides what stays resident."""
    import types

    from test_runtime_ops import ComfyLikeOps

    from nodes import _comfy, _patcher
    from nodes._types import OviModel
    from ovi_core.model.config import TINY
    from ovi_core.model.fusion import OviFusionModel

    calls = []
    mm = _StandInMM(0, state)
    mm.load_models_gpu = lambda models, **kw: calls.append((models, kw))
    monkeypatch.setattr(_comfy, "model_management", lambda: mm)
    model = OviFusionModel(TINY, device="meta", dtype=torch.bfloat16, operations=ComfyLikeOps)
    patcher = types.SimpleNamespace(loaded_size=lambda: 0, current_loaded_device=lambda: torch.device("cpu"),
                                    offload_device=torch.device("cpu"))
    handle = OviModel(module=model, device=torch.device("cuda"), dtype=torch.bfloat16, version="1.1",
                      target_area=960 * 960, memory_mode=mode, patcher=patcher)
    with _patcher.use_model(handle) as dit:
        assert dit is model
    act = activation_bytes(dit_tokens_for_area(960 * 960, version="1.1"))
    assert calls == [([patcher], {"memory_required": act, "force_full_load": full})]
