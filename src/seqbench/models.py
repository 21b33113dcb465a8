"""Input embeddings (``conf/embedding/<name>.yaml``) in front of a recurrent stack (``seqbench.cells``).

Each maps token ids (B, T) to vectors (B, T, dim) and is built by the task with
``instantiate(embedding_cfg, vocab_size=V)``. An embedding that needs the training data
(word2vec) gets it afterwards through :meth:`Embedding.prepare`, called once by ``run.build``;
the vectors then live in the state dict, so checkpoints restore them without the data and
hyper-parameters stay plain config values (checkpoints load with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.errors import ConfigError

log = logging.getLogger("seqbench")


class Embedding(nn.Module):
    """Interface: ``dim`` (output size) and ``prepare`` (a no-op unless trained on the data)."""

    dim: int

    def prepare(self, tokenizer, texts: list[str], cache_dir: str | Path | None = None) -> None:
        """Initialise from the tokenized training split (word2vec); nothing to do by default."""

    def report(self) -> dict[str, float]:
        """Metrics about how the embedding was initialised (logged with the run); none by default."""
        return {}

    @classmethod
    def check_config(cls, embedding) -> None:
        """Checks of an ``embedding`` config before any run (one line each); none by default."""


class LearnedEmbedding(Embedding):
    """x_t = E[token_t], E trained with the model; dropout on the embedded sequence."""

    def __init__(self, vocab_size: int, dim: int = 64, dropout: float = 0.0, padding_idx: int | None = None,
                 name: str = "learned", **_):
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T) -> (B, T, dim)
        return self.drop(self.embed(tokens))


class OneHotEmbedding(Embedding):
    """x_t = e_{token_t}, the fixed one-hot vector: dim = V, nothing learned (the seeds' input).

    A V-dimensional input only makes sense for small vocabularies (characters, bytes): above
    ``max_vocab`` it is refused, pointing to ``embedding=learned``.
    """

    def __init__(self, vocab_size: int, max_vocab: int = 1024, name: str = "onehot", **_):
        super().__init__()
        if vocab_size > max_vocab:
            raise ConfigError(f"embedding=onehot: the vocabulary has {vocab_size} tokens, more than "
                              f"embedding.max_vocab={max_vocab} (one-hot inputs are vocab-sized); use "
                              f"embedding=learned, or a smaller tokenizer (char, byte, tokenizer.vocab_size)")
        self.dim = vocab_size
        self.register_buffer("eye", torch.eye(vocab_size), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T) -> (B, T, V)
        return F.embedding(tokens, self.eye)


class Word2VecEmbedding(LearnedEmbedding):
    """E initialised with gensim word2vec vectors (Mikolov et al. 2013) of the tokenizer's tokens,
    trained on the tokenized training split; frozen (``freeze: true``) or fine-tuned.

    Skip-gram (``sg: 1``) or CBOW (``sg: 0``) with ``negative`` negative samples and a context
    ``window``. Tokens word2vec never saw (specials, rare tokens below ``min_count``) get
    N(0, sigma^2) rows with sigma the trained vectors' standard deviation; <pad> gets zeros.
    Vectors are cached by (tokenizer, training texts, word2vec parameters).
    """

    def __init__(self, vocab_size: int, dim: int = 64, dropout: float = 0.0, freeze: bool = False,
                 sg: int = 1, negative: int = 5, window: int = 5, min_count: int = 1, epochs: int = 5,
                 seed: int = 0, name: str = "word2vec", **_):
        super().__init__(vocab_size, dim, dropout, name=name)
        if sg not in (0, 1):
            raise ConfigError(f"embedding.sg={sg} must be 1 (skip-gram) or 0 (CBOW)")
        for key, value in {"negative": negative, "window": window, "min_count": min_count, "epochs": epochs}.items():
            if int(value) < 1:
                raise ConfigError(f"embedding.{key}={value} must be >= 1")
        self.params = dict(vector_size=int(dim), sg=int(sg), negative=int(negative), window=int(window),
                           min_count=int(min_count), epochs=int(epochs), seed=int(seed))
        self.freeze = bool(freeze)
        self.embed.weight.requires_grad_(not self.freeze)

    def prepare(self, tokenizer, texts: list[str], cache_dir: str | Path | None = None) -> None:
        vectors = word2vec_matrix(tokenizer, texts, self.params, cache_dir)
        with torch.no_grad():
            self.embed.weight.copy_(torch.from_numpy(vectors))


def token_sentences(tokenizer, texts: list[str], max_len: int = 1000) -> list[list[str]]:
    """The training split as word2vec sentences of token ids (as strings); long texts (an LM
    corpus is one text) are cut into pieces of ``max_len`` tokens (gensim's limit is 10,000)."""
    out = []
    for ids in tokenizer.encode_batch(list(texts)):
        words = [str(i) for i in ids]
        out += [words[i:i + max_len] for i in range(0, len(words), max_len)]
    return out


def word2vec_matrix(tokenizer, texts: list[str], params: dict, cache_dir: str | Path | None) -> np.ndarray:
    """(V, dim) float32 matrix: row i = word2vec vector of token i (see Word2VecEmbedding)."""
    from seqbench.tokenizers import corpus_fingerprint

    key = hashlib.sha256(json.dumps([tokenizer.fingerprint(), corpus_fingerprint(texts), params],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "word2vec" / f"{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    from gensim.models import Word2Vec

    # one worker: gensim is deterministic only single-threaded
    model = Word2Vec(token_sentences(tokenizer, texts), workers=1, **params)
    V, dim = tokenizer.vocab_size, params["vector_size"]
    trained = np.stack([model.wv[k] for k in model.wv.index_to_key]) if len(model.wv) else np.zeros((1, dim))
    rng = np.random.default_rng(params["seed"])
    matrix = rng.normal(0.0, float(trained.std()) or 0.1, (V, dim)).astype(np.float32)
    for k in model.wv.index_to_key:
        matrix[int(k)] = model.wv[k]
    if tokenizer.pad_id is not None:
        matrix[tokenizer.pad_id] = 0.0
    log.info("word2vec: %d of %d tokens trained", len(model.wv), V)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{key}.{uuid.uuid4().hex[:8]}.tmp.npy")
        np.save(tmp, matrix)
        tmp.replace(path)  # atomic for parallel sweep jobs
    return matrix


class PretrainedEmbedding(LearnedEmbedding):
    """E initialised from a vector file a user supplies (``embedding.path``), frozen or fine-tuned.

    Formats (text): GloVe, ``word v_1 ... v_d`` per line; word2vec, the same after a ``count dim``
    header line (detected). A token is looked up as itself (a word token's leading space removed),
    then lower-cased. Tokens the file lacks (out of vocabulary, OOV) get N(0, sigma^2) rows, sigma
    the found vectors' standard deviation (Kim 2014 draws OOV words with the variance of the
    pre-trained ones); <pad> gets zeros. :meth:`report` gives the coverage, logged with the run:
    ``embedding/oov_types`` (vocabulary entries not in the file), ``embedding/oov_rate`` (share of
    the training split's tokens that are OOV).
    """

    def __init__(self, vocab_size: int, path: str, dim: int | None = None, freeze: bool = False,
                 dropout: float = 0.0, seed: int = 0, name: str = "pretrained", **_):
        file_dim = vector_file_dim(path)
        if dim is not None and int(dim) != file_dim:
            raise ConfigError(f"embedding.dim={dim} does not match the vector file {path} ({file_dim}-dimensional); "
                              f"set embedding.dim={file_dim} or null")
        super().__init__(vocab_size, file_dim, dropout, name=name)
        self.path, self.seed, self.freeze = str(path), int(seed), bool(freeze)
        self.embed.weight.requires_grad_(not self.freeze)
        self.coverage: dict[str, float] = {}

    @classmethod
    def check_config(cls, embedding) -> None:
        from omegaconf import OmegaConf

        if OmegaConf.is_missing(embedding, "path") or not embedding.get("path"):
            raise ConfigError("embedding=pretrained needs the vector file: embedding.path=/path/to/vectors.txt "
                              "(GloVe or word2vec text format)")
        dim = vector_file_dim(embedding.path)
        if embedding.get("dim") is not None and int(embedding.dim) != dim:
            raise ConfigError(f"embedding.dim={embedding.dim} does not match the vector file {embedding.path} "
                              f"({dim}-dimensional); set embedding.dim={dim} or null")

    def prepare(self, tokenizer, texts: list[str], cache_dir: str | Path | None = None) -> None:
        vocab = tokenizer.hf.get_vocab()  # token -> id
        matrix, found = vector_matrix(self.path, vocab, self.dim, self.seed, tokenizer.pad_id)
        specials = {i for i in (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) if i is not None}
        words = [i for i in vocab.values() if i not in specials]
        counts = np.bincount(np.fromiter((t for ids in tokenizer.encode_batch(list(texts)) for t in ids), dtype=np.int64),
                             minlength=len(vocab))
        oov = np.ones(len(vocab), dtype=bool)
        oov[list(found)] = False
        self.coverage = {"embedding/vocab_types": float(len(words)),
                         "embedding/oov_types": float(sum(oov[i] for i in words)),
                         "embedding/oov_rate": float(counts[oov].sum() / max(counts.sum(), 1))}
        log.info("pretrained vectors %s: %d of %d vocabulary words found; %.1f %% of training tokens OOV",
                 self.path, len(words) - int(self.coverage["embedding/oov_types"]), len(words),
                 100 * self.coverage["embedding/oov_rate"])
        with torch.no_grad():
            self.embed.weight.copy_(torch.from_numpy(matrix))

    def report(self) -> dict[str, float]:
        return dict(self.coverage)


def _open_vectors(path: str | Path):
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"embedding.path={path}: no such vector file (GloVe or word2vec text format, "
                          f"e.g. glove.840B.300d.txt)")
    return p.open(encoding="utf-8", errors="replace")


def vector_file_dim(path: str | Path) -> int:
    """The dimension of a GloVe/word2vec text file, from its first line(s)."""
    with _open_vectors(path) as f:
        first = f.readline().rstrip("\n").split(" ")
        if len(first) == 2 and all(x.isdigit() for x in first):  # word2vec header: count dim
            return int(first[1])
    if len(first) < 2:
        raise ConfigError(f"embedding.path={path} is not a vector file: its first line is not 'word v1 ... vd'")
    return len(first) - 1


def vector_matrix(path: str | Path, vocab: dict[str, int], dim: int, seed: int = 0,
                  pad_id: int | None = None) -> tuple[np.ndarray, set[int]]:
    """(V, dim) float32 matrix from the file's vectors of the vocabulary's tokens, and the ids found.

    The file is streamed (a 5 GB GloVe file is never held in memory): only lines whose word is a
    vocabulary token (stripped, or lower-cased) are parsed. An exact match beats a lower-cased one."""
    wanted: dict[str, list[tuple[int, int]]] = {}  # file word -> [(token id, priority)]
    for token, i in vocab.items():
        word = token.strip()
        if word:
            wanted.setdefault(word, []).append((i, 0))
            if word.lower() != word:
                wanted.setdefault(word.lower(), []).append((i, 1))
    rows: dict[int, tuple[int, np.ndarray]] = {}
    with _open_vectors(path) as f:
        for n, line in enumerate(f):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in wanted:
                continue
            values = np.array(rest.split(" "), dtype=np.float32)
            if values.shape != (dim,):
                if n == 0:  # the word2vec header
                    continue
                raise ConfigError(f"embedding.path={path}: line {n + 1} has {values.size} values, expected {dim}")
            for i, priority in wanted[word]:
                if i not in rows or priority < rows[i][0]:
                    rows[i] = (priority, values)
    found = np.stack([v for _, v in rows.values()]) if rows else np.zeros((1, dim), np.float32)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, float(found.std()) or 0.1, (len(vocab), dim)).astype(np.float32)
    for i, (_, v) in rows.items():
        matrix[i] = v
    if pad_id is not None:
        matrix[pad_id] = 0.0
    return matrix, set(rows)
