"""Embeddings: learned, fixed one-hot (refused for large vocabularies), word2vec (trained on the
training split, cached, frozen or fine-tuned) with a planted synonym pair."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_cfg
from seqbench.errors import ConfigError, instantiate
from seqbench.models import LearnedEmbedding, OneHotEmbedding, Word2VecEmbedding, word2vec_matrix
from seqbench.tokenizers import WordTokenizer
from seqbench.validate import group_options


def embedding(name: str, vocab_size: int, *overrides):
    cfg = compose_cfg([f"embedding={name}", *overrides])
    return instantiate(cfg.embedding, vocab_size=vocab_size)


def test_every_kind_has_a_config():
    assert {"learned", "onehot", "word2vec"} <= set(group_options("embedding"))


def test_learned_and_onehot_shapes():
    tokens = torch.tensor([[0, 3, 5], [2, 2, 1]])
    learned = embedding("learned", 7, "embedding.dim=5")
    assert isinstance(learned, LearnedEmbedding) and learned(tokens).shape == (2, 3, 5)
    onehot = embedding("onehot", 7)
    assert isinstance(onehot, OneHotEmbedding) and onehot.dim == 7
    assert torch.equal(onehot(tokens), F.one_hot(tokens, 7).float())
    assert not list(onehot.parameters())  # nothing learned


def test_onehot_refuses_a_large_vocabulary():
    with pytest.raises(ConfigError, match=r"embedding=onehot: the vocabulary has 5000 tokens, more than "
                                          r"embedding.max_vocab=1024.*embedding=learned"):
        embedding("onehot", 5000)


#: a tiny corpus with a planted synonym pair: "apple" and "pear" occur in exactly the same
#: contexts; every other noun has contexts of its own
def planted_corpus(n: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    frames = {"fruit": "she ate one {} after lunch", "dog": "the {} barked at the mailman",
              "car": "he parked the {} in the garage", "rain": "the {} fell on the roof all night",
              "book": "they read a {} before bed"}
    words = {"fruit": ["apple", "pear"], "dog": ["dog", "puppy", "hound"], "car": ["car", "truck"],
             "rain": ["rain", "snow"], "book": ["book", "novel"]}
    texts = []
    for _ in range(n):
        kind = rng.choice(list(frames))
        texts.append(frames[kind].format(rng.choice(words[kind])))
    return texts


def nearest(matrix: torch.Tensor, row: int, candidates: list[int]) -> int:
    sims = F.cosine_similarity(matrix[row].unsqueeze(0), matrix[candidates], dim=1)
    return candidates[int(sims.argmax())]


@pytest.mark.parametrize("sg", [1, 0])
def test_word2vec_shape_and_planted_synonyms_are_nearest_neighbours(sg, tmp_path):
    texts = planted_corpus()
    tok = WordTokenizer(vocab_size=1000).train(texts)
    emb = embedding("word2vec", tok.vocab_size, "embedding.dim=16", f"embedding.sg={sg}",
                    "embedding.window=3", "embedding.epochs=10")
    assert isinstance(emb, Word2VecEmbedding)
    emb.prepare(tok, texts, tmp_path)
    weights = emb.embed.weight.detach()
    assert weights.shape == (tok.vocab_size, 16)
    assert torch.all(weights[tok.pad_id] == 0)
    vocab = tok.hf.get_vocab()
    nouns = [" apple", " pear", " dog", " puppy", " hound", " car", " truck", " rain", " snow", " book", " novel"]
    ids = [vocab[w] for w in nouns]
    apple, pear = vocab[" apple"], vocab[" pear"]
    assert nearest(weights, apple, [i for i in ids if i != apple]) == pear
    assert nearest(weights, pear, [i for i in ids if i != pear]) == apple


def test_word2vec_vectors_are_cached_and_deterministic(tmp_path, monkeypatch):
    texts = planted_corpus(300)
    tok = WordTokenizer().train(texts)
    params = dict(vector_size=8, sg=1, negative=5, window=2, min_count=1, epochs=2, seed=3)
    first = word2vec_matrix(tok, texts, params, tmp_path)
    assert len(list((tmp_path / "word2vec").glob("*.npy"))) == 1
    assert (word2vec_matrix(tok, texts, params, None) == first).all()  # same seed, same vectors

    import gensim.models

    def no_training(*args, **kwargs):
        raise AssertionError("word2vec trained again instead of loading the cache")

    monkeypatch.setattr(gensim.models, "Word2Vec", no_training)
    assert (word2vec_matrix(tok, texts, params, tmp_path) == first).all()


@pytest.mark.parametrize("freeze", [True, False])
def test_word2vec_frozen_or_fine_tuned(freeze):
    texts = planted_corpus(200)
    tok = WordTokenizer().train(texts)
    emb = embedding("word2vec", tok.vocab_size, "embedding.dim=8", f"embedding.freeze={freeze}",
                    "embedding.epochs=1")
    emb.prepare(tok, texts)
    before = emb.embed.weight.detach().clone()
    assert emb.embed.weight.requires_grad is (not freeze)
    trainable = [p for p in emb.parameters() if p.requires_grad]
    if trainable:
        opt = torch.optim.SGD(trainable, lr=1.0)
        emb(torch.tensor([tok.encode(texts[0])])).sum().backward()
        opt.step()
    assert torch.equal(emb.embed.weight.detach(), before) is freeze


@pytest.mark.parametrize("override,message", [("embedding.sg=2", "embedding.sg=2 must be 1 (skip-gram) or 0"),
                                              ("embedding.window=0", "embedding.window=0 must be >= 1")])
def test_word2vec_bad_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        embedding("word2vec", 10, override)


# -- pre-trained vectors from a file (embedding=pretrained) --------------------------------------

VECTORS = {"the": [0.1, 0.2, 0.3], "film": [1.0, -1.0, 0.5], "Good": [0.0, 2.0, -2.0], "good": [9.0, 9.0, 9.0]}


def write_vectors(path, header: bool = False):
    lines = [f"{len(VECTORS)} 3"] if header else []
    lines += [f"{w} " + " ".join(map(str, v)) for w, v in VECTORS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header", [False, True], ids=["glove", "word2vec"])
def test_pretrained_vectors_round_trip_and_oov_is_reported(tmp_path, header):
    from seqbench.models import PretrainedEmbedding

    path = write_vectors(tmp_path / "vectors.txt", header)
    texts = ["the film was Good", "the plot was dull"]
    tok = WordTokenizer().train(texts)
    emb = embedding("pretrained", tok.vocab_size, f"embedding.path={path}")
    assert isinstance(emb, PretrainedEmbedding) and emb.dim == 3
    emb.prepare(tok, texts)
    weight = emb.embed.weight.detach()
    row = lambda word: weight[tok.hf.token_to_id(word)]
    assert torch.allclose(row("the"), torch.tensor(VECTORS["the"]))            # first word: no leading space
    assert torch.allclose(row(" film"), torch.tensor(VECTORS["film"]))         # " film" looked up as "film"
    assert torch.allclose(row(" Good"), torch.tensor(VECTORS["Good"]))         # exact case beats lower-case
    assert torch.equal(weight[tok.pad_id], torch.zeros(3))
    # OOV: the words the file lacks (" was", " plot", " dull") and whitespace tokens (no vector)
    words = {t for t in tok.hf.get_vocab() if t.strip() and not t.startswith("<")}
    oov = {t for t in words if t.strip() not in VECTORS}
    ids = [i for ids in tok.encode_batch(texts) for i in ids]
    oov_ids = {tok.hf.token_to_id(t) for t in oov} | {i for t, i in tok.hf.get_vocab().items() if not t.strip()}
    report = emb.report()
    assert report["embedding/oov_types"] == len(oov) + sum(1 for t in tok.hf.get_vocab() if t and not t.strip())
    assert report["embedding/oov_rate"] == pytest.approx(sum(i in oov_ids for i in ids) / len(ids))
    assert torch.isfinite(row(" plot")).all() and not torch.equal(row(" plot"), torch.zeros(3))


def test_pretrained_vectors_bad_input_is_one_line(tmp_path):
    from seqbench.models import PretrainedEmbedding

    cfg = compose_cfg(["embedding=pretrained"])
    with pytest.raises(ConfigError, match="embedding=pretrained needs the vector file"):
        PretrainedEmbedding.check_config(cfg.embedding)
    cfg = compose_cfg(["embedding=pretrained", f"embedding.path={tmp_path / 'nope.txt'}"])
    with pytest.raises(ConfigError, match="no such vector file"):
        PretrainedEmbedding.check_config(cfg.embedding)
    path = write_vectors(tmp_path / "v.txt")
    cfg = compose_cfg(["embedding=pretrained", f"embedding.path={path}", "embedding.dim=300"])
    with pytest.raises(ConfigError, match=r"embedding.dim=300 does not match .* \(3-dimensional\)"):
        PretrainedEmbedding.check_config(cfg.embedding)
