"""Ovi prompt helper: official-format conversion, parsing, and warnings on malformed tags."""

import os
import re

import pytest

from ovi_core.text.prompt import ParsedPrompt, check_prompt, convert_prompt, parse_prompt, read_prompt_csv

DATA = os.path.join(os.path.dirname(__file__), "data")
T2V = os.path.join(DATA, "umt5_prompts_t2v_5s.csv")
I2V = os.path.join(DATA, "umt5_prompts_i2v_5s.csv")


@pytest.fixture(scope="module")
def prompts():
    return read_prompt_csv(T2V) + read_prompt_csv(I2V)


def test_read_prompt_csv():
    t2v = read_prompt_csv(T2V)
    i2v = read_prompt_csv(I2V)
    assert len(t2v) == 12 and all(img is None for _, img in t2v)
    assert len(i2v) == 25 and all(img and img.startswith("example_prompts/pngs/") for _, img in i2v)
    assert t2v[0][0].startswith("A concert stage glows") and t2v[0][0].endswith("<ENDAUDCAP>")
    assert '""' not in t2v[2][0] and '"I DO EVERYTHING' in t2v[2][0]  # CSV quoting undone


def test_read_prompt_tsv_uses_tabs(tmp_path):
    rows = read_prompt_csv(T2V)
    tsv = tmp_path / "prompts.tsv"
    # prompts hold commas; a .tsv separates columns by tabs only
    tsv.write_text("text_prompt\timage_path\n" + "".join(f"{p}\t{img or ''}\n" for p, img in rows), encoding="utf-8")
    assert read_prompt_csv(tsv) == rows
    assert any("," in p for p, _ in rows)


def test_read_prompt_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,image\nhello,x.png\n")
    with pytest.raises(ValueError, match="text_prompt"):
        read_prompt_csv(bad)
    with pytest.raises(FileNotFoundError):
        read_prompt_csv(tmp_path / "missing.csv")


def test_convert_matches_official_regexes_on_examples(prompts):
    n_cap = 0
    for text, _ in prompts:
        v11 = convert_prompt(text, version="1.1")
        v10 = convert_prompt(text, version="1.0")
        # the official expressions, written out here
        assert v11 == re.sub(r"<AUDCAP>(.*?)<ENDAUDCAP>", r"Audio: \1", text, flags=re.S)
        assert v10 == re.sub(r"Audio:\s*(.*)", r"<AUDCAP>\1<ENDAUDCAP>", text, flags=re.S)
        assert v10 == text  # the examples are 1.0 prompts already
        if "<AUDCAP>" in text:
            n_cap += 1
            assert "<AUDCAP>" not in v11 and "<ENDAUDCAP>" not in v11
            cap = text.split("<AUDCAP>")[1].split("<ENDAUDCAP>")[0]
            assert v11.endswith("Audio: " + cap)
            assert convert_prompt(v11, version="1.0") == text  # round trip
            assert convert_prompt(v11, version="1.1") == v11
            p10, p11 = parse_prompt(text), parse_prompt(v11)
            assert (p10.format, p11.format) == ("1.0", "1.1")
            assert p10.audio_caption == p11.audio_caption == cap.strip()
            assert p10.speech == p11.speech
            assert p10.video_text == p11.video_text
        else:
            assert v11 == text
    assert n_cap == 36


def test_convert_known_strings_and_versions():
    p = "A dog. <S>Hi there.<E> Audio:   barking, wind"
    assert convert_prompt(p, version="1.0") == "A dog. <S>Hi there.<E> <AUDCAP>barking, wind<ENDAUDCAP>"
    assert convert_prompt(p, version="960x960_10s") == p
    q = "A dog. <AUDCAP>barking<ENDAUDCAP> then <AUDCAP>wind<ENDAUDCAP>"
    assert convert_prompt(q, version="1.1-10s") == "A dog. Audio: barking then Audio: wind"
    with pytest.raises(ValueError, match="1.0"):
        convert_prompt(p, version="2.0")


def test_parse_prompt():
    p = parse_prompt("A man in a hat. He says, <S>We hold the line.<E> Then <S> Go! <E> <AUDCAP>Male voice.<ENDAUDCAP>")
    assert p == ParsedPrompt(speech=["We hold the line.", "Go!"], audio_caption="Male voice.",
                             video_text="A man in a hat. He says, Then", format="1.0")
    q = parse_prompt("Rain on a roof. Audio: steady rain, distant thunder.")
    assert q.format == "1.1" and q.audio_caption == "steady rain, distant thunder." and q.speech == []
    assert q.video_text == "Rain on a roof."
    r = parse_prompt("just a cat")
    assert r.format is None and r.audio_caption is None and r.video_text == "just a cat"


def test_examples_have_no_format_warnings(prompts):
    for text, _ in prompts:
        warns = check_prompt(text)
        has_speech = "<S>" in text
        has_cap = "<AUDCAP>" in text
        expected = (0 if has_speech else 1) + (0 if has_cap else 1)
        assert len(warns) == expected, (text[:80], warns)
        assert not check_prompt(convert_prompt(text, version="1.1")) or not (has_speech and has_cap)


def _one(text, pattern, **kw):
    warns = check_prompt(text, **kw)
    assert any(re.search(pattern, w) for w in warns), warns
    return warns


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("He says <S>hello there. <AUDCAP>voice<ENDAUDCAP>", r"'<S>' is never closed"),
        ("He says hello<E> <AUDCAP>voice<ENDAUDCAP>", r"stray '<E>'"),
        ("He says <S>one <S>two<E> <AUDCAP>voice<ENDAUDCAP>", r"opens again"),
        ("He says <S> <E> <AUDCAP>voice<ENDAUDCAP>", r"empty '<S><E>'"),
        ("He says <s>hello<e> <AUDCAP>voice<ENDAUDCAP>", r"'<s>' .* not an Ovi tag"),
        ("He says <S>hello</S> <AUDCAP>voice<ENDAUDCAP>", r"'</S>' .* not an Ovi tag"),
        ("He says <S>hello<E> <AudCap>voice</AUDCAP>", r"'<AudCap>' .* not an Ovi tag"),
        ("He says <S>hello<E> <AUDCAP>voice", r"'<AUDCAP>' is never closed"),
        ("He says <S>hello<E> <AUDCAP><ENDAUDCAP>", r"empty '<AUDCAP><ENDAUDCAP>'"),
        ("He says <S>hello<E> <AUDCAP>voice<ENDAUDCAP> Audio: voice", r"both an <AUDCAP>"),
        ("Audio: voice. He says <S>hello<E>", r"Speech tags appear after 'Audio:'"),
        ("He says <S>hello<E> audio: voice", r"'audio:' .* exactly 'Audio:'"),
        ("He says <S>hello<E> Audio:   ", r"followed by nothing"),
        ("He says <S>hello<E>.", r"No audio caption"),
        ("A quiet forest. Audio: birds", r"No speech"),
        ("He says <S>hi<E> <AUDCAP>a <S>b<E><ENDAUDCAP>", r"inside the audio caption"),
        ("   ", r"empty"),
    ],
)
def test_check_prompt_warnings(text, pattern):
    _one(text, pattern)


def test_check_prompt_version_note_and_clean_prompt():
    good = "A man says <S>hello<E>. Audio: male voice"
    assert check_prompt(good) == []
    assert check_prompt(good, version="1.1") == []
    _one(good, r"converted for Ovi 1.0", version="1.0")
