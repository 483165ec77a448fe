"""Long clips end to end on tiny weights: exact frame/sample counts in the MP4 and WAV, no partial file after an
interrupt, resuming from saved windows, and peak memory that does not grow with the number of windows."""

import json
import os
import subprocess
import sys
import wave

import av
import pytest
import torch

from ovi_core.longclip.job import generate_long_clip
from ovi_core.longclip.plan import plan_windows
from ovi_core.sampling.settings import SamplingSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "A man in a red coat says <S>Hello.<E> <AUDCAP>Clear male voice.<ENDAUDCAP>"
pytestmark = pytest.mark.usefixtures("one_thread")


def _mp4_frames(path):
    with av.open(path) as c:
        assert {s.type: s.codec_context.name for s in c.streams} == {"video": "h264", "audio": "aac"}
        return sum(1 for _ in c.decode(video=0))


def _wav(path):
    with wave.open(path, "rb") as f:
        assert f.getframerate() == 16000 and f.getnchannels() == 1
        return f.readframes(f.getnframes())


@pytest.fixture(scope="module")
def two_windows(pipe, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("clip") / "long.mp4")
    res = generate_long_clip(pipe, [PROMPT], seconds=8, out=out, settings=SamplingSettings(steps=1, seed=5), wav=True)
    return res, out


def test_two_windows_give_the_exact_frame_and_sample_counts(two_windows):
    res, out = two_windows
    plan = res.plan
    assert plan.num_windows == 2 and plan.frames == 193
    assert _mp4_frames(out) == 193
    pcm = _wav(out[:-4] + ".wav")
    assert len(pcm) // 2 == plan.samples == round(193 * 16000 / 24)
    assert sorted(os.listdir(os.path.dirname(out))) == ["long.mp4", "long.wav"]
    assert res.audio_source == "generated" and res.prompts == [PROMPT, PROMPT]


class Stop(Exception):
    pass


def test_interrupt_mid_window_leaves_no_file_and_resume_gives_the_same_clip(pipe, two_windows, tmp_path):
    res, ref = two_windows
    out = str(tmp_path / "long.mp4")
    store = str(tmp_path / "windows")
    calls = []

    def progress(win, wins, step, steps):
        calls.append((win, step))

    state = {"armed": False, "checks": 0}

    def progress2(win, wins, step, steps):
        calls.append((win, step))
        state["armed"] = win == 1 and step == steps  # window 1 sampled

    def interrupt():  # ComfyUI's interrupt check raises the same way
        if state["armed"]:
            state["checks"] += 1
            if state["checks"] == 3:  # between windows, before window 2, then inside window 2's first step
                raise Stop()

    with pytest.raises(Stop):
        generate_long_clip(pipe, [PROMPT], seconds=8, out=out, settings=SamplingSettings(steps=1, seed=5), wav=True,
                           windows_dir=store,
                           progress=progress2, check_interrupt=interrupt)
    assert sorted(os.listdir(tmp_path)) == ["windows"]  # no MP4, no WAV, no temporary file
    assert os.listdir(store) == ["window_000.safetensors"]
    # resume: window 1 is loaded, window 2 sampled; the same clip as the uninterrupted run
    calls.clear()
    generate_long_clip(pipe, [PROMPT], seconds=8, out=out, settings=SamplingSettings(steps=1, seed=5), wav=True,
                           windows_dir=store,
                       progress=progress)
    assert calls == [(2, 1)]
    assert _wav(out[:-4] + ".wav") == _wav(ref[:-4] + ".wav")
    # a run with other settings does not reuse them
    from ovi_core.longclip.store import WindowStore

    assert WindowStore(store, key="other").load(0) is None and os.path.isfile(os.path.join(store, "window_000.safetensors"))


def test_bad_input_fails_before_any_weights_run(pipe, tmp_path):
    out = str(tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="at least 5"):
        generate_long_clip(pipe, [PROMPT], seconds=3, out=out)
    with pytest.raises(ValueError, match="at most 2"):
        generate_long_clip(pipe, ["a", "b", "c"], seconds=8, out=out)
    with pytest.raises(ValueError, match="make the clip at least"):
        generate_long_clip(pipe, [PROMPT], seconds=6, out=out, audio=(torch.zeros(2, 44100 * 8), 44100))
    assert not os.path.exists(out)


def test_given_audio_is_what_the_mp4_carries(pipe, tmp_path):
    g = torch.Generator().manual_seed(0)
    track = (torch.rand(1, 16000 * 6, generator=g) - 0.5) * 0.2  # 6 s of a 7 s clip
    out = str(tmp_path / "sync.mp4")
    res = generate_long_clip(pipe, [PROMPT], seconds=7, out=out, settings=SamplingSettings(steps=1, seed=1),
                             audio=(track, 16000), wav=True)
    assert res.audio_source == "given"
    pcm = torch.frombuffer(bytearray(_wav(out[:-4] + ".wav")), dtype=torch.int16)
    assert pcm.shape[0] == res.plan.samples
    want = (track[0].clamp(-1, 1) * 32767).to(torch.int16)
    assert torch.equal(pcm[: track.shape[1]], want)


RSS_SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from ovi_core.pipeline import OviPipeline
from ovi_core.longclip.job import generate_long_clip
from ovi_core.sampling.settings import SamplingSettings

def kib(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1])

pipe = OviPipeline.from_weights({weights!r}, device='cpu', download=False)
prompt = {prompt!r}
peaks = {{}}
for seconds in (20, 8):  # 6 windows first, so one-time costs would count against the long run
    open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
    res = generate_long_clip(pipe, [prompt], seconds=seconds, out={out!r},
                             settings=SamplingSettings(steps=1, seed=0))
    peaks[res.plan.num_windows] = kib('VmHWM:')
print(json.dumps(peaks))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset the peak RSS")
def test_peak_memory_does_not_grow_with_the_number_of_windows(weights, tmp_path):
    code = RSS_SCRIPT.format(root=ROOT, weights=weights, prompt=PROMPT, out=str(tmp_path / "m.mp4"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    peaks = {int(k): v for k, v in json.loads(run.stdout.strip().splitlines()[-1]).items()}
    assert set(peaks) == {6, 2}
    plan = plan_windows(20, version="1.0")
    held = 4 * plan.window_frames * 64 * 64 * 3 * 4 // 1024  # KiB of the frames of 4 more windows, float32
    growth = peaks[6] - peaks[2]
    print(f"peak RSS: 2 windows {peaks[2] / 1024:.1f} MiB, 6 windows {peaks[6] / 1024:.1f} MiB")
    assert growth <= 0.03 * peaks[2], peaks  # within 3 %
    assert growth < held / 2, (peaks, held)  # and far below keeping the decoded windows
