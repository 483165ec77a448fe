"""UMT5 tokenization as the official Ovi code does it, plus a tiny real tokenizer for tests.

The official code tokenizes with ``AutoTokenizer.from_pretrained("google/umt5-xxl")`` after a
"whitespace" clean (``ftfy.fix_text`` when available, ``html.unescape`` twice, runs of whitespace collapsed
to one space, ends stripped), pads to ``text_len`` = 512, truncates, and appends ``</s>``.

Two back ends give the same ids:

* a Hugging Face tokenizer folder (``google/umt5-xxl`` next to the official encoder file);
* the raw sentencepiece model bytes that ComfyUI embeds in its repackaged ``umt5_xxl_*.safetensors``
  as a ``spiece_model`` uint8 tensor (read with the ``sentencepiece`` library, as ComfyUI does).
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import random
import re
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger(__name__)

TEXT_LEN = 512
SPECIAL_TAGS = ("<S>", "<E>", "<AUDCAP>", "<ENDAUDCAP>", "Audio:")

_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """The official ``clean='whitespace'`` step: ftfy fix (if installed), double HTML unescape, collapse spaces."""
    try:
        import ftfy  # noqa: PLC0415  (optional dependency)
    except ImportError:  # pragma: no cover - depends on the environment
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WS.sub(" ", text).strip()


class UMT5Tokenizer:
    """Turns prompts into fixed-length ``(ids, mask)`` batches exactly like the official T5 tokenizer call.

    Use :meth:`from_pretrained` (a tokenizer folder) or :meth:`from_spiece_model` (sentencepiece bytes).
    """

    def __init__(
        self,
        encode: Callable[[str], list[int]],
        *,
        eos_id: int,
        pad_id: int,
        vocab_size: int,
        text_len: int = TEXT_LEN,
        source: str = "",
    ) -> None:
        if text_len < 2:
            raise ValueError(f"text_len must be at least 2 (got {text_len}).")
        self._encode = encode
        self.eos_id = int(eos_id)
        self.pad_id = int(pad_id)
        self.vocab_size = int(vocab_size)
        self.text_len = int(text_len)
        self.source = source

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"UMT5Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, text_len={self.text_len})"

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, text_len: int = TEXT_LEN) -> UMT5Tokenizer:
        """Load a Hugging Face tokenizer folder (e.g. ``Wan2.2-TI2V-5B/google/umt5-xxl``) offline."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"Tokenizer folder not found: {path!r}. Use the 'google/umt5-xxl' folder that comes with "
                "Wan-AI/Wan2.2-TI2V-5B (it holds tokenizer.json / spiece.model)."
            )
        from transformers import AutoTokenizer  # noqa: PLC0415  (heavy import, only when needed)

        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"{path!r} is not a usable tokenizer folder ({e}). It should be the 'google/umt5-xxl' folder "
                "from Wan-AI/Wan2.2-TI2V-5B with tokenizer.json, tokenizer_config.json and spiece.model."
            ) from e
        if tok.eos_token_id is None:
            raise ValueError(f"The tokenizer in {path!r} has no end-of-sequence token; it is not a T5 tokenizer.")

        def encode(text: str) -> list[int]:
            return list(tok(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return cls(encode, eos_id=tok.eos_token_id, pad_id=pad, vocab_size=len(tok), text_len=text_len, source=path)

    @classmethod
    def from_spiece_model(cls, data: bytes | torch.Tensor, *, text_len: int = TEXT_LEN) -> UMT5Tokenizer:
        """Build from sentencepiece model bytes (ComfyUI's embedded ``spiece_model`` uint8 tensor)."""
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().to(torch.uint8).numpy().tobytes()
        import sentencepiece as spm  # noqa: PLC0415

        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(bytes(data))
        except (RuntimeError, OSError) as e:
            raise ValueError(f"The embedded sentencepiece model could not be read ({e}); pass tokenizer_path.") from e
        eos = sp.eos_id()
        if eos < 0:
            raise ValueError("The embedded sentencepiece model has no </s> token; it is not a T5 tokenizer.")
        pad = sp.pad_id() if sp.pad_id() >= 0 else 0

        def encode(text: str) -> list[int]:
            return list(sp.encode(text))

        return cls(encode, eos_id=eos, pad_id=pad, vocab_size=sp.get_piece_size(), text_len=text_len,
                   source="embedded spiece_model")

    # -- use --------------------------------------------------------------------------------------

    def token_ids(self, text: str) -> list[int]:
        """Cleaned, untruncated ids of one prompt, without ``</s>``."""
        return self._encode(clean_text(text))

    def truncation_warning(self, text: str) -> str | None:
        """The warning for a prompt longer than ``text_len`` tokens (it would be cut), else None."""
        n = len(self.token_ids(text)) + 1  # + </s>
        if n <= self.text_len:
            return None
        return (f"The prompt has {n} tokens; UMT5 takes {self.text_len}, so it is cut after {self.text_len - 1} "
                f"tokens and the end is lost (...{clean_text(text)[-60:]!r}). Shorten the prompt.")

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize a batch: returns ``ids`` [B, text_len] int64 and ``mask`` [B, text_len] int64.

        Same result as ``tokenizer(texts, padding='max_length', truncation=True, max_length=text_len,
        add_special_tokens=True)``: at most ``text_len - 1`` tokens, then ``</s>``, then padding.
        A warning is logged for every prompt that is cut.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string; wrap it in a list.")
        n = len(texts)
        ids = torch.full((n, self.text_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, self.text_len), dtype=torch.long)
        for i, text in enumerate(texts):
            toks = self.token_ids(text)
            if len(toks) > self.text_len - 1:
                logger.warning(
                    "Prompt %d has %d tokens; UMT5 takes %d, so it is cut after %d tokens (the end is lost: "
                    "%r...). Shorten the prompt.", i, len(toks) + 1, self.text_len, self.text_len - 1,
                    clean_text(text)[-60:],
                )
                toks = toks[: self.text_len - 1]
            toks = toks + [self.eos_id]
            ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            mask[i, : len(toks)] = 1
        return ids, mask


def load_tokenizer(
    path: str | os.PathLike | None = None, *, spiece_model: bytes | torch.Tensor | None = None,
    text_len: int = TEXT_LEN,
) -> UMT5Tokenizer:
    """A tokenizer from a folder (preferred) or from embedded sentencepiece bytes."""
    if path is not None:
        return UMT5Tokenizer.from_pretrained(path, text_len=text_len)
    if spiece_model is not None:
        return UMT5Tokenizer.from_spiece_model(spiece_model, text_len=text_len)
    raise FileNotFoundError(
        "No UMT5 tokenizer: pass tokenizer_path (the 'google/umt5-xxl' folder from Wan-AI/Wan2.2-TI2V-5B) "
        "or use a text-encoder file that embeds one (ComfyUI's umt5_xxl_*.safetensors)."
    )


# ----------------------------------------------------------------------------------------------
# Tiny real tokenizer (for the tiny-weights set and tests)
# ----------------------------------------------------------------------------------------------

# Lower-cased words of the official example prompts (a vocabulary fact, used to train the tiny tokenizer).
_TINY_WORDS = """
    a about abrupt abruptly accompanied accustom across acrylic actively adding addresses addressing adds adorned
    affirming after again against agape age ahead ai air all almost along also am ambience ambient amplified an
    ancient and angled animal annoyed another appear appearing appears arched are area arm armchair armchairs arms
    around arrow articulates articulating artificial as ass at atmosphere atmospheric atop attentive attentively
    audcap authenticity away back backdrop background backstage bag bald banner barking bars baseball bathed be
    beard bearded beat beats becomes been before begins behind bellows bells below bend bending beside between
    beverage beyond black blazing blinds blonde bloodshot blue blurred blurry body bolt books both bottom breaking
    breaks breath brick brief briefly bright brighter brings broad broadly brow brown building but button buzzing
    by cabinets cable calm camera can can't cap capturing carcasses cardigan casts cds ceiling ceilings cell
    center central chains chatter checkered cheek cheering chest choice choose christmas chuckles ci circuits clad
    clasped clean clear clearly clerical close closed closer cloth coat code coiffed coiled collar colored
    colorful command completing concerned concert concludes confront confronted conquest consistent contact
    contemplation contemplative continue continues continuing continuous contorts control conversation corridor
    counter countertops couple courage covered cowboy cracks creating crisp cross crowd crumpled cup cups curly
    curtain curtains cuts dampening dance dancer dark darkness deal death declares decorated decorations deep
    deliberate delicate delicately demeanor denim depicting desolate determination determined dialogue dim dimly
    dining direct directed directly dirty disappearing disheveled displaying distant distorted distressed do
    document dog dogs doing dominates door down downwards dramatic draped drapery dress dressed dressing drink
    drive driving drone drops e each ear earnest earrings echo echoes echoing ego either electric electronic
    emanates emblem embrace emphasizing endaudcap ends endures energy enjoy entirely enunciates environment
    epaulets equipment era erased especially event every everything exchange exertion exhalation explain explains
    expression expressively eye eyes fabric face faces facing fading faint faintly fair fall fashioned feather
    features featuring fedora feedback feeling female fence fences festive fight figures filled filling film
    finger fingers finished finishes first fists fixed fixture flamenco flare floral flower flowers flowing flying
    fm foam focus focused focusing fogging foliage followed for foreground formally forming forward fountain frame
    framed freedom frequency from front frustration full fur further fury futuristic gas gathering gaze gazes
    gazing gentle gently genuine gesture gestures gesturing get glares glass glasses glittering gloves glow glows
    goatee gold got gotta grand granite graphic grass grate gray green grey grips ground grunting guitar guitarist
    guttural had hair haired hall hand handles hands hanging has hat hats hazy he head headphones heavy height her
    here hides high him hint his hold holding holds hollow hooded hoop hope houses hum human humanity humans i if
    illuminated illuminating ilovechoicefm immediate in including indian indicating indistinct individual
    individuals indoor indoors industrial initially intense intensity intently interaction interrogation intimate
    into intricate iridescent is it it's italian its jacket jackets jeans just keep kill kiss kitchen knit know
    knowing labbra lamp land landscape large largely larger later laughter lean leans learned leather left length
    let lifts light lightbulbs lighter lighthearted lighting lightning lights like likely line lip lips listen
    listening listens lit logo long look looking looks loud loudly low lower lush machines maintaining maintains
    makes makeup male man man's marked master mastiff matter me media medium melodies men metal metallic mic
    microphone mid middle minotaur mirror moment moments mood more mostly motion mouth movies moving muffled
    multiple mumble murmuring museum music mustache my nail neatly neck necklace need network neutral next
    nightclub no nods noise noises nor not now obey object obscured obsolete of off old older on once one only
    open opens opposite or orange ornate ornately other other's our ours out outdoor outdoors outlasts over
    overall overcast painting palm palms paneled pants parted partially passion passionate patterned pause pauses
    peaks pearl pendant pensive pensively people perched person person's perturbed physical piano pictures pillars
    pink pitched plaid plant plastic playfully plays pleading podium point polish positioned possibly poster power
    presentation pressed printed prison prominent public pulls purple pursed questioning quiet quilted ragged
    raises raleigh rattling reaches reading real really rear red reddish rejects remain remaining remains remark
    remember resigned resist resonant responds response resting reveals reverb riffs right rings rise rising roars
    robe rocks rocky rolled romantic room rope round rule rustic s sadness santa say saying says scene scold
    scream screams screech screen scruffy seated second seemingly seen selective self semi sentence sequined
    serious sermon service set setting settling several shade shadow shadows shaking share sharing sharp shawl she
    shelf shifts shining shirt shirts shooing short shorts shot shoulder shoulders shout shouted shouts showcasing
    shown shows side sides signs silken silver sincerity singer sings sits situation skinned sky slam slams slave
    sleeved slicked slight slightly slowly small smaller smart smile smiles smiling smirk snow social sofa soft
    solare solemn somber someone somewhat sound sounds soundscape source space spanish speak speaking speaks
    speech spirit spit sporting spotlight spotted spraying spread stack stage staircase stand standing stands
    starts statement stating steady step steps still stone stove straight straining street striped structures
    strung studio style styled subtle subtly sudden suggesting suggests suit sunglasses sunny surface surrounded
    surrounding suspended sways sweat sweater synth t table taking talent tattooed tattoos teal tears tender tense
    textured that that's the their them then there they thing think third this those thought thoughtful three
    through throughout ti tie ties tilting time tinged tiny tirani tissue to toaster today together tone toned
    tonight top torn touching towards tree trim trimmed trousers trust tunic turned turns turtleneck two ufc ufo
    un under underlying unfolds unfurls uniform until unwavering up upbeat upwards urgent vanity various varsity
    vehicle veil veins venue very vibrant video viewer violently visible vocal vocals voice voices vorrebbe
    walkways wall walls wants warehouse warm watching water waves wavy we wearing wears wedding well what where
    which while white who wide will win window with within woman woman's women wooden work working world wrap
    yellow you you're young younger your
""".split()

_PUNCT = ",.;:!?'\"-()[]/&%$#@*+=0123456789"


def _tiny_corpus(seed: int) -> list[str]:
    """Deterministic pseudo-prompts using the example prompts' words and Ovi's tags."""
    rng = random.Random(seed)
    words = _TINY_WORDS

    def phrase(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    lines = [" ".join(_PUNCT), " ".join(w.capitalize() for w in words)]
    for _ in range(1500):
        s = phrase(6, 24)
        s = s[0].upper() + s[1:] + rng.choice([".", ",", "!", "?", ";"])
        r = rng.random()
        if r < 0.7:
            s += f" He says, <S>{phrase(2, 8).capitalize()}.<E> " + phrase(3, 10) + "."
        if r < 0.35:
            s += f" <AUDCAP>{phrase(3, 9).capitalize()}.<ENDAUDCAP>"
        elif r < 0.7:
            s += f" Audio: {phrase(3, 9).capitalize()}."
        lines.append(s)
    return lines


def write_tiny_tokenizer(out_dir: str | os.PathLike, *, vocab_size: int = 1000, seed: int = 0) -> int:
    """Train a small sentencepiece unigram model and save it as a Hugging Face T5 tokenizer folder.

    The folder holds ``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json`` and
    ``special_tokens_map.json``; ``AutoTokenizer.from_pretrained(out_dir)`` loads it offline as a
    ``T5TokenizerFast`` (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no extra ids). Returns the vocabulary size.
    Deterministic for a given ``seed``; takes well under a second.
    """
    import sentencepiece as spm  # noqa: PLC0415
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors  # noqa: PLC0415
    from tokenizers.models import Unigram  # noqa: PLC0415
    from transformers import T5TokenizerFast  # noqa: PLC0415

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_tiny_corpus(seed)), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, normalization_rule_name="identity",
        num_threads=1, seed_sentencepiece_size=100000, minloglevel=2,
    )
    proto = buf.getvalue()
    with open(os.path.join(out_dir, "spiece.model"), "wb") as f:
        f.write(proto)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]

    # Same pipeline as transformers' T5 slow->fast conversion (identity normalisation: no charsmap).
    tk = Tokenizer(Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=False))
    tk.normalizer = normalizers.Sequence(
        [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "\u2581")]
    )
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", sp.eos_id())]
    )
    fast = T5TokenizerFast(
        tokenizer_object=tk, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
        additional_special_tokens=[], model_max_length=TEXT_LEN,
    )
    fast.save_pretrained(out_dir)
    # make the saved config self-describing and stable (no absolute paths, no timestamps)
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = "T5Tokenizer"
    cfg["legacy"] = True
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    return len(fast)
