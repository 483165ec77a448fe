"""``generate --seconds N`` with several ``--prompt`` values or a ``.txt`` file; 5 and 10 keep their meaning."""

import argparse
import os

import av
import pytest

from ovi_core.cli import main as cli
from ovi_core.cli.longclip import is_long_clip, seconds_arg, single_prompt

pytestmark = pytest.mark.usefixtures("one_thread")


def _parse(*argv):
    return cli.build_parser().parse_args(["generate", "--weights", "w", "--out", "o.mp4", *argv])


def test_seconds_keeps_5_and_10_and_takes_any_length_from_5():
    assert seconds_arg("5") == 5 and isinstance(seconds_arg("5"), int)
    assert seconds_arg("10.0") == 10 and isinstance(seconds_arg("10.0"), int)
    assert seconds_arg("7.5") == 7.5
    for bad in ("4.9", "x", "nan", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds_arg(bad)
    assert not is_long_clip(_parse("--prompt", "p"))
    assert not is_long_clip(_parse("--prompt", "p", "--seconds", "10"))
    assert is_long_clip(_parse("--prompt", "p", "--seconds", "20"))
    assert is_long_clip(_parse("--prompt", "a", "--prompt", "b"))
    assert is_long_clip(_parse("--prompt", "prompts.txt", "--seconds", "5"))
    assert single_prompt(_parse("--prompt", "p")) == "p"
    a = _parse("--prompt", "p", "--seconds", "30")
    assert (a.overlap, a.crossfade, a.windows_dir) == (2.0, 0.5, None)


def test_long_clip_from_the_command_line(weights, tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("A man says <S>Hello there.<E> Audio: male voice.\nHe adds <S>Goodbye.<E> Audio: male voice.\n",
                   encoding="utf-8")
    out = tmp_path / "long.mp4"
    image = os.path.join(os.path.dirname(__file__), "data", "ovi_example_89.png")  # first frame of window 1
    rc = cli.main(["generate", "--weights", weights, "--prompt", str(txt), "--seconds", "8", "--steps", "1",
                   "--offline", "--device", "cpu", "--image", image, "--out", str(out), "--wav"])
    assert rc == 0
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 193
    assert os.path.getsize(tmp_path / "long.wav") == 44 + 2 * round(193 * 16000 / 24)


@pytest.mark.parametrize("argv,msg", [
    (["--prompt", "a", "--prompt", "b"], "--seconds"),
    (["--prompt", "a", "--prompt", "b", "--prompt", "c", "--seconds", "8"], "at most 2"),
    (["--prompt", "a", "--seconds", "20", "--source", "v.mp4", "--redo", "audio:1-2"], "drop --seconds"),
    (["--prompt", "a", "--seconds", "20", "--overlap", "9"], "overlap"),
    (["--prompt", "a", "--seconds", "20", "--image", "missing.png"], "Image not found"),
    (["--prompt", "a", "--seconds", "20", "--seed", str(2**70)], "seed"),
    (["--prompt", "a", "--seconds", "20", "--steps", "0"], "steps"),
    (["--prompt", "a", "--seconds", "20", "--lora", "missing.safetensors"], "missing.safetensors"),
])
def test_bad_long_clip_flags_fail_before_loading(weights, tmp_path, capsys, argv, msg):
    rc = cli.main(["generate", "--weights", weights, "--offline", "--out", str(tmp_path / "x.mp4"), *argv])
    assert rc == 2 and msg in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.mp4")


def test_a_csv_batch_is_not_a_long_clip(weights, tmp_path, capsys):
    csv = tmp_path / "batch.csv"
    csv.write_text("text_prompt\nA <S>Hi.<E>\n", encoding="utf-8")
    rc = cli.main(["generate", "--weights", weights, "--offline", "--prompt", str(csv), "--seconds", "20",
                   "--out", str(tmp_path / "x.mp4")])
    assert rc == 2 and "CSV batch" in capsys.readouterr().err
