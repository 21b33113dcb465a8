"""Tokenizers built with HF ``tokenizers`` and trained on the training split only.

Every kind shares the same special tokens (``SPECIALS``) and the same wrapper,
:class:`TrainedTokenizer`, which encodes a text into a token stream together with the number of
characters and UTF-8 bytes each token newly covers: summing those over evaluated targets gives the
exact denominators of bits per character and bits per byte, whatever the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = [PAD, UNK, BOS, EOS]


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

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))


@dataclass
class TokenizerSpec:
    """Base of every ``conf/tokenizer/*.yaml`` target: ``spec.train(texts)`` -> TrainedTokenizer.

    Subclasses implement :meth:`build` (an untrained ``Tokenizer`` and its trainer).
    """

    name: str = "base"

    def build(self) -> tuple[Tokenizer, trainers.Trainer]:
        raise NotImplementedError

    def train(self, texts: Iterable[str]) -> TrainedTokenizer:
        tok, trainer = self.build()
        tok.train_from_iterator(texts, trainer=trainer)
        return TrainedTokenizer(tok, self.name)

    def fingerprint(self) -> str:
        return json.dumps({"class": type(self).__name__, **asdict(self)}, sort_keys=True)


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


def corpus_fingerprint(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def train_or_load(spec: TokenizerSpec, train_texts: list[str], cache_dir: str | Path | None) -> TrainedTokenizer:
    """Train ``spec`` on the training texts, cached on disk by (corpus fingerprint, spec)."""
    if cache_dir is None:
        return spec.train(iter(train_texts))
    key = hashlib.sha256((corpus_fingerprint(train_texts) + spec.fingerprint()).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"{spec.name}-{key}" / "tokenizer.json"
    if path.is_file():
        return TrainedTokenizer(Tokenizer.from_file(str(path)), spec.name)
    trained = spec.train(iter(train_texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    trained.save(tmp)
    tmp.replace(path)  # atomic: parallel sweep jobs never read a half-written file
    return trained


def iter_texts(dataset) -> Iterator[str]:
    yield from dataset["text"]
