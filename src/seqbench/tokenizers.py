"""Tokenizers built with HF ``tokenizers`` and trained on the training split only.

Six kinds (``conf/tokenizer/<name>.yaml``), all sharing the special tokens ``SPECIALS`` at ids
0-3 (pad, unk, bos, eos) and one wrapper, :class:`TrainedTokenizer`:

    char       one token per Unicode character; unseen characters -> <unk>
    byte       one token per UTF-8 byte (256 + specials, nothing to learn); never <unk>
    word       words with their leading space (`` the``), punctuation runs, whitespace runs;
               vocabulary = the ``vocab_size`` most frequent of the training split; rest -> <unk>
    bpe        byte-level BPE (GPT-2): merges learned over the 256 byte symbols; never <unk>
    wordpiece  WordPiece (``##`` continuation pieces) over the same word pre-tokens as ``word``
    unigram    Unigram LM (SentencePiece), spaces as ``▁``

Every kind is lossless: ``decode(encode(text)) == text`` unless a piece is <unk> (whitespace is
kept as tokens or inside pieces, never normalised away). :meth:`TrainedTokenizer.encode_stream`
gives, per token, the characters and UTF-8 bytes of the text it newly covers: summed over
evaluated targets they are the exact denominators of bits per character and bits per byte,
whatever the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
import uuid
from typing import ClassVar, Iterable, Iterator

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from seqbench.errors import ConfigError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = [PAD, UNK, BOS, EOS]
#: bump when a recipe below changes, so cached tokenizers are retrained
RECIPE_VERSION = 3
#: word pre-tokens (GPT-2 style): a word/number/punctuation run with at most one leading space,
#: or a whitespace run (its last space stays with the next word). Concatenating them is the text.
WORD_PATTERN = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


class TrainedTokenizer:
    """An HF ``tokenizers.Tokenizer`` plus the stream encoding the tasks need."""

    def __init__(self, hf: Tokenizer, kind: str):
        self.hf = hf
        self.kind = kind
        self.pad_id = hf.token_to_id(PAD)
        self.unk_id = hf.token_to_id(UNK)
        self.bos_id = hf.token_to_id(BOS)
        self.eos_id = hf.token_to_id(EOS)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def encode_stream(self, text: str) -> dict[str, torch.Tensor]:
        """ids (N,), and per token the characters / UTF-8 bytes of ``text`` it newly covers.

        Tokens of one character split into several pieces (byte-level) share an offset span; the
        span is credited once, to the first token reaching its end, so the counts sum to exactly
        the characters/bytes covered by the stream.
        """
        enc = self.hf.encode(text, add_special_tokens=False)
        chars, nbytes, covered = [], [], 0
        for _, end in enc.offsets:
            new = max(0, end - covered)
            chars.append(new)
            nbytes.append(len(text[covered:covered + new].encode("utf-8")))
            covered = max(covered, end)
        return {"ids": torch.tensor(enc.ids, dtype=torch.long),
                "chars": torch.tensor(chars, dtype=torch.long),
                "bytes": torch.tensor(nbytes, dtype=torch.long)}

    def fingerprint(self) -> str:
        """Hash of the trained tokenizer (vocabulary, merges, pipeline): keys encoded caches."""
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))


@dataclass
class TokenizerSpec:
    """Base of every ``conf/tokenizer/*.yaml`` target: ``spec.train(texts)`` -> TrainedTokenizer.

    Subclasses implement :meth:`build` (an untrained ``Tokenizer`` and its trainer).
    """

    name: str = "base"
    #: whether the trainer numbers the tokens it learns in an order that changes from process to
    #: process (then :func:`renumbered` fixes it)
    unstable_ids: ClassVar[bool] = False

    def build(self) -> tuple[Tokenizer, trainers.Trainer]:
        raise NotImplementedError

    def train(self, texts: Iterable[str]) -> TrainedTokenizer:
        tok, trainer = self.build()
        tok.train_from_iterator(texts, trainer=trainer)
        return TrainedTokenizer(renumbered(tok) if self.unstable_ids else tok, self.name)

    def fingerprint(self) -> str:
        return json.dumps({"class": type(self).__name__, "recipe": RECIPE_VERSION, **asdict(self)},
                          sort_keys=True)


def renumbered(tok: Tokenizer) -> Tokenizer:
    """``tok`` with the tokens it learned numbered in sorted order after the specials (ids 0-3).

    HF's WordPiece and Unigram trainers learn the same vocabulary and segmentation in every
    process but number it in hash-map order, which changes from process to process; the ids
    (and so the embedding row a seeded init gives each token) would differ between two runs of
    one configuration. Sorting makes the same training text give the same ids."""
    spec = json.loads(tok.to_str())
    model = spec["model"]
    if isinstance(model["vocab"], dict):  # token -> id (WordPiece)
        by_id = sorted(model["vocab"], key=model["vocab"].get)
        order = by_id[:len(SPECIALS)] + sorted(by_id[len(SPECIALS):])
        model["vocab"] = {t: i for i, t in enumerate(order)}
    else:  # [token, score] pairs, the id being the position (Unigram)
        pieces = model["vocab"]
        model["vocab"] = pieces[:len(SPECIALS)] + sorted(pieces[len(SPECIALS):], key=lambda p: p[0])
    assert [t if isinstance(t, str) else t[0] for t in model["vocab"]][:len(SPECIALS)] == SPECIALS
    return Tokenizer.from_str(json.dumps(spec))


@dataclass
class CharTokenizer(TokenizerSpec):
    """One token per Unicode character (newlines included); unseen characters map to <unk>."""

    name: str = "char"

    def build(self):
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return tok, trainers.WordLevelTrainer(vocab_size=1_000_000, min_frequency=1,
                                              special_tokens=SPECIALS, show_progress=False)


@dataclass
class ByteTokenizer(TokenizerSpec):
    """One token per UTF-8 byte: a byte-level BPE without merges. The vocabulary is fixed (4
    specials + 256 bytes), so training learns nothing and no text can produce <unk>."""

    name: str = "byte"

    def train(self, texts: Iterable[str]) -> TrainedTokenizer:
        vocab = {t: i for i, t in enumerate(SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()))}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.add_special_tokens(SPECIALS)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return TrainedTokenizer(tok, self.name)


@dataclass
class _SizedSpec(TokenizerSpec):
    """A learned vocabulary of at most ``vocab_size`` entries, the 4 specials included."""

    vocab_size: int = 1000
    #: the smallest sensible vocabulary (below it the trainer cannot honour vocab_size)
    min_vocab: ClassVar[int] = len(SPECIALS) + 1

    def __post_init__(self):
        if int(self.vocab_size) < self.min_vocab:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size} is too small for tokenizer="
                              f"{self.name}: it must be >= {self.min_vocab} (the {len(SPECIALS)} "
                              f"specials included)")


@dataclass
class WordTokenizer(_SizedSpec):
    """Word level: pre-tokens of ``WORD_PATTERN`` are the tokens; out-of-vocabulary words <unk>."""

    name: str = "word"
    vocab_size: int = 20000
    min_frequency: int = 1

    def build(self):
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return tok, trainers.WordLevelTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                              special_tokens=SPECIALS, show_progress=False)


@dataclass
class BPETokenizer(_SizedSpec):
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte alphabet): never <unk>."""

    name: str = "bpe"
    min_frequency: int = 2
    min_vocab: ClassVar[int] = len(SPECIALS) + 256  # the byte alphabet

    def build(self):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok, trainers.BpeTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                        special_tokens=SPECIALS, show_progress=False,
                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


@dataclass
class WordPieceTokenizer(_SizedSpec):
    """WordPiece (Schuster & Nakajima 2012; BERT's greedy longest-match) over ``WORD_PATTERN``
    pre-tokens, so whitespace is kept; a pre-token with an unseen character becomes one <unk>.

    Renumbered after training (:func:`renumbered`). HF's trainer can still learn a slightly
    different vocabulary in another process: it breaks ties between equally frequent merges by
    ids given in hash-map order (huggingface/tokenizers#1794, open); the disk cache keeps one
    machine's runs on one vocabulary."""

    name: str = "wordpiece"
    min_frequency: int = 1
    unstable_ids: ClassVar[bool] = True

    def build(self):
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=1000))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
        # pieces are substrings of the text: drop the "##" continuation marks and concatenate
        tok.decoder = decoders.Sequence([decoders.Replace("##", ""), decoders.Fuse()])
        return tok, trainers.WordPieceTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                              special_tokens=SPECIALS, show_progress=False)


@dataclass
class UnigramTokenizer(_SizedSpec):
    """Unigram LM (Kudo 2018, SentencePiece): spaces become ``▁`` and start pieces."""

    name: str = "unigram"
    unstable_ids: ClassVar[bool] = True

    def build(self):
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
        return tok, trainers.UnigramTrainer(vocab_size=self.vocab_size, special_tokens=SPECIALS,
                                            unk_token=UNK, show_progress=False)


def corpus_fingerprint(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def cache_path(spec: TokenizerSpec, train_texts: list[str], cache_dir: str | Path) -> Path:
    """Where ``spec`` trained on ``train_texts`` is cached: keyed by (corpus fingerprint, spec)."""
    key = hashlib.sha256((corpus_fingerprint(train_texts) + spec.fingerprint()).encode()).hexdigest()[:16]
    return Path(cache_dir) / "tokenizers" / f"{spec.name}-{key}" / "tokenizer.json"


def train_or_load(spec: TokenizerSpec, train_texts: list[str], cache_dir: str | Path | None) -> TrainedTokenizer:
    """Train ``spec`` on the training texts, cached on disk by (corpus fingerprint, spec)."""
    if cache_dir is None:
        return spec.train(iter(train_texts))
    path = cache_path(spec, train_texts, cache_dir)
    if path.is_file():
        return TrainedTokenizer(Tokenizer.from_file(str(path)), spec.name)
    trained = spec.train(iter(train_texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tokenizer.{uuid.uuid4().hex[:8]}.tmp")
    trained.save(tmp)
    tmp.replace(path)  # atomic: parallel sweep jobs never read a half-written file
    return trained


def iter_texts(dataset) -> Iterator[str]:
    yield from dataset["text"]
