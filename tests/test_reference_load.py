"""DreamID-Omni's checkpoint is fp32 (about 46.6 GB): the fusion loader casts it tensor by tensor to the compute dtype,
never holding a full fp32 copy; its bf16 / fp8 conversions load through the same loader."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.model.config import TINY, FusionConfig
from ovi_core.model.loader import fp8_state_dict, load_fusion, random_fusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "dreamid")


def test_fp32_bf16_fp8_files_of_the_dreamid_weights(tmp_path):
    """The oracle's weights written as DreamID-Omni's fp32 file and as the community bf16 / fp8 conversions: each
    loads strictly through ``load_fusion``; fp32 -> bf16 gives exactly the bf16 weights (and the recorded output)."""
    from ovi_core.model.ref_rope import RefLayout

    meta = json.load(open(os.path.join(DATA, "dreamid_ref.json")))
    io = load_file(os.path.join(DATA, "dreamid_ref.io.safetensors"))
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    sd = load_file(os.path.join(DATA, "dreamid_ref.weights.safetensors"))
    save_file({k: v.float() for k, v in sd.items()}, str(tmp_path / "dreamid_omni.safetensors"))
    save_file(fp8_state_dict(sd), str(tmp_path / "dreamid_omni_fp8_e4m3fn.safetensors"))
    m32 = load_fusion(str(tmp_path / "dreamid_omni.safetensors"), dtype=torch.bfloat16, config=cfg)
    got = m32.state_dict()
    assert all(got[k].dtype == torch.bfloat16 and torch.equal(got[k], v) for k, v in sd.items())
    v = torch.cat([io["inputs.video"], io["inputs.ref_image0"]], dim=1)[None]
    a = torch.cat([io["inputs.audio"], io["inputs.ref_audio0"]], dim=0)[None]
    lay = RefLayout.dreamid(1, [io["inputs.ref_audio0"].shape[0]])
    with torch.no_grad():
        vp, _ = m32(v, a, torch.tensor([700.0]), [io["inputs.ctx_pos"]], [io["inputs.ctx_pos"]], references=lay)
    ref = io["outputs.refs1.pos.video"]
    assert float((vp[0].float() - ref.float()).norm() / ref.float().norm()) <= 8e-3
    m8 = load_fusion(str(tmp_path / "dreamid_omni_fp8_e4m3fn.safetensors"), dtype=torch.bfloat16, config=cfg)
    assert m8.video_model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    with torch.no_grad():
        v8, _ = m8(v, a, torch.tensor([700.0]), [io["inputs.ctx_pos"]], [io["inputs.ctx_pos"]], references=lay)
    assert v8.shape == vp.shape and torch.isfinite(v8).all()


_PROBE = r"""
import sys, threading, time, torch
from ovi_core.model.loader import load_fusion

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
peak = [0]
stop = [False]
def watch():
    while not stop[0]:
        peak[0] = max(peak[0], anon()); time.sleep(0.0005)
load_fusion(sys.argv[2], dtype=torch.bfloat16)  # warm: imports and first-use allocations are not the file's
base = anon()
th = threading.Thread(target=watch); th.start()
m = load_fusion(sys.argv[1], dtype=torch.bfloat16)
stop[0] = True; th.join()
print(peak[0] - base, sum(p.numel() * p.element_size() for p in m.parameters()))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc (Linux)")
def test_fp32_file_is_cast_tensor_by_tensor(tmp_path):
    """Peak anonymous memory while loading a ~75 MB fp32 file as bf16 stays well below the fp32 size: the bf16 model
    (half) plus one tensor in flight, not a full fp32 copy (which alone would be the whole file)."""
    video = dataclasses.replace(TINY.video, dim=384, ffn_dim=1536, text_dim=64, num_layers=4)
    audio = dataclasses.replace(video, model_type="t2a", patch_size=(1,), in_dim=20, out_dim=20,
                                temporal_rope_scaling_factor=0.19676)
    cfg = FusionConfig(video=video, audio=audio)
    warm = str(tmp_path / "tiny.safetensors")
    save_file({k: v.contiguous() for k, v in random_fusion(TINY, seed=0).state_dict().items()}, warm)
    model = random_fusion(cfg, seed=0)
    path = str(tmp_path / "fp32.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    fp32_bytes = os.path.getsize(path)
    del model
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _PROBE, path, warm], capture_output=True, text=True, env=env, check=True)
    peak, bf16_bytes = (int(x) for x in out.stdout.split()[-2:])
    assert fp32_bytes > 60e6 and abs(bf16_bytes - fp32_bytes / 2) < 0.01 * fp32_bytes
    assert peak < 0.8 * fp32_bytes, (peak, fp32_bytes)


@pytest.mark.parametrize("name", ["dreamid_omni.safetensors", "DreamID-Omni-bf16.safetensors",
                                  "dreamid_omni_fp8_e4m3fn.safetensors"])
def test_dreamid_files_take_the_960x960_area(name):
    """DreamID-Omni generates 704x1280, 121 frames, 157 audio latents: Ovi 1.1's 5 s spec, not 1.0's 720x720."""
    from ovi_core import sizes
    from ovi_core.io.checkpoint_id import fusion_version_from_name

    v = fusion_version_from_name(name)
    assert v == "1.1"
    spec = sizes.MODEL_SPECS[v]
    assert (spec.video_latent_frames, spec.audio_latent_length) == (31, 157)
    assert sizes.snap_hw_to_area(704, 1280, area=spec.area) == (704, 1280)
