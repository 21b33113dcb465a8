"""The six tokenizers: train on the training split only, shared specials, lossless round trips,
no <unk> from byte-level kinds, the disk cache, and bits/char on a model whose answer is known."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from datasets import Dataset, DatasetDict

from conftest import compose_cfg, needs_data
from seqbench.data.classify import ClassificationDataModule
from seqbench.data.lm import LMDataModule
from seqbench.errors import ConfigError, instantiate
from seqbench.tasks.lm import LanguageModel
from seqbench.tokenizers import SPECIALS, BPETokenizer, train_or_load
from seqbench.validate import group_options, validate

KINDS = ["char", "byte", "word", "bpe", "wordpiece", "unigram"]
TRAIN = ["The cat sat on the mat.\nThe dog sat on the log!", "  Two  spaces,\ttabs\tand café ☕ too.",
         "the quick brown fox jumps over the lazy dog"] * 20
#: made of training texts (so of seen characters, words and pieces), irregular whitespace included
SEEN = TRAIN[1] + TRAIN[0]
#: characters no training text has
UNSEEN = "Zürich 東京 🙂 \x00 ŽQ"


def spec(kind: str, **overrides):
    cfg = compose_cfg([f"tokenizer={kind}", *[f"tokenizer.{k}={v}" for k, v in overrides.items()]])
    return instantiate(cfg.tokenizer)


def sized(kind: str):
    return spec(kind, vocab_size=300) if kind in ("bpe", "wordpiece", "unigram", "word") else spec(kind)


def test_every_kind_has_a_config():
    assert set(KINDS) <= set(group_options("tokenizer"))


@pytest.mark.parametrize("kind", KINDS)
def test_trains_with_shared_specials_and_round_trips(kind):
    tok = sized(kind).train(TRAIN)
    assert [tok.hf.id_to_token(i) for i in range(4)] == SPECIALS
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    ids = tok.encode(SEEN)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == SEEN  # lossless: whitespace and unicode kept
    stream = tok.encode_stream(SEEN)  # every character/byte counted exactly once
    assert int(stream["chars"].sum()) == len(SEEN)
    assert int(stream["bytes"].sum()) == len(SEEN.encode("utf-8"))
    assert stream["ids"].tolist() == ids


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_byte_level_kinds_never_produce_unk(kind):
    tok = sized(kind).train(TRAIN)
    ids = tok.encode(UNSEEN)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == UNSEEN
    assert int(tok.encode_stream(UNSEEN)["bytes"].sum()) == len(UNSEEN.encode())


@pytest.mark.parametrize("kind", ["char", "word", "wordpiece", "unigram"])
def test_other_kinds_map_unseen_characters_to_unk(kind):
    tok = sized(kind).train(TRAIN)
    assert tok.unk_id in tok.encode("東京")


def test_byte_vocabulary_is_fixed_and_bpe_honours_vocab_size():
    assert spec("byte").train(TRAIN).vocab_size == 4 + 256
    assert spec("bpe", vocab_size=300).train(TRAIN).vocab_size == 300
    word = spec("word", vocab_size=10).train(TRAIN)
    assert word.vocab_size == 10


@pytest.mark.parametrize("kind,size", [("bpe", 100), ("unigram", 3)])
def test_too_small_vocab_size_is_refused_before_any_run(kind, size):
    with pytest.raises(ConfigError, match=f"tokenizer.vocab_size={size} is too small for tokenizer={kind}"):
        validate(compose_cfg([f"tokenizer={kind}", f"tokenizer.vocab_size={size}"]))


def corpus(train, val, test, labels=False):
    def ds(texts):
        return Dataset.from_dict({"text": texts, **({"label": [0] * len(texts)} if labels else {})})
    return DatasetDict(train=ds(train), validation=ds(val), test=ds(test))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("datamodule", [LMDataModule, ClassificationDataModule])
def test_trained_on_the_training_split_only(kind, datamodule):
    data = corpus(["the cat sat", "a dog ran"] * 30, ["the cat ran"], ["zebra quokka yaks"])
    tok = train_or_load(sized(kind), datamodule.tokenizer_texts(data), None)
    vocab = tok.hf.get_vocab()
    assert not any(w in token for token in vocab for w in ("zebra", "quokka", "yak"))
    if kind not in ("byte", "bpe"):  # letters never seen in training: z, q, u, k, y
        assert tok.unk_id in tok.encode("zebra quokka")


@needs_data("sst", "train.txt")
def test_a_word_only_in_the_sst_test_split_is_not_in_the_vocabulary(tmp_path):
    from seqbench.run import build

    cfg = compose_cfg(["task=classify", "data=sst2", "tokenizer=word"], root=tmp_path)
    corpus, tok, _, _ = build(cfg)

    def words(split):  # the word tokenizer's candidate tokens: its pre-tokens
        return {w for t in corpus[split]["text"] for w, _ in tok.hf.pre_tokenizer.pre_tokenize_str(t)}

    test_only = sorted(words("test") - words("train"))
    assert len(test_only) > 100
    vocab = tok.hf.get_vocab()
    assert not [w for w in test_only if w in vocab]
    assert tok.encode(test_only[0]) == [tok.unk_id]


def test_cache_hit_on_the_second_run(tmp_path, monkeypatch):
    texts = TRAIN[:3]
    first = train_or_load(BPETokenizer(vocab_size=280), texts, tmp_path)
    assert len(list(tmp_path.rglob("tokenizer.json"))) == 1

    def no_training(self, texts):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(BPETokenizer, "train", no_training)
    second = train_or_load(BPETokenizer(vocab_size=280), texts, tmp_path)
    assert second.hf.get_vocab() == first.hf.get_vocab() and second.encode(SEEN) == first.encode(SEEN)
    monkeypatch.undo()
    train_or_load(BPETokenizer(vocab_size=290), texts, tmp_path)  # other spec -> other entry
    assert len(list(tmp_path.rglob("tokenizer.json"))) == 2


# -- bits per character on a model whose answer is known by hand --------------------------------------
def uniform_lm(vocab_size: int, unk_id: int) -> LanguageModel:
    """A language model whose logits are all zero: p = 1/V for every token, NLL = ln V."""
    module = LanguageModel(vocab_size, model={"_target_": "seqbench.cells.build_stack", "cell": "lstm",
                                              "hidden_size": 4},
                           embedding={"_target_": "seqbench.models.LearnedEmbedding", "dim": 4}, unk_id=unk_id)
    with torch.no_grad():
        module.head.weight.zero_()
        module.head.bias.zero_()
    return module


def evaluate(kind: str, test_text: str, train=TRAIN):
    tok = train_or_load(sized(kind), LMDataModule.tokenizer_texts(corpus(train, ["x"], ["x"])), None)
    dm = LMDataModule(corpus(train, [test_text], [test_text]), tok, batch_size=1, eval_batch_size=1, bptt=16)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(uniform_lm(tok.vocab_size, tok.unk_id), datamodule=dm, verbose=False)
    return tok, {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_bits_per_char_of_a_uniform_model(kind):
    """One stream column: targets are tokens 2..N of the text, so by hand
    bits/char = (N - 1) log2 V / (characters after the first token), likewise per byte."""
    text = "The cat sat on the mat, café ☕!\nThe dog sat on the log."
    tok, m = evaluate(kind, text)
    enc = tok.hf.encode(text, add_special_tokens=False)
    n, first_end, V = len(enc.ids), enc.offsets[0][1], tok.vocab_size
    chars, nbytes = len(text) - first_end, len(text.encode()) - len(text[:first_end].encode())
    assert m["test/tokens"] == n - 1
    assert m["test/loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert m["test/bits_per_char"] == pytest.approx((n - 1) * math.log2(V) / chars, rel=1e-5)
    assert m["test/bits_per_byte"] == pytest.approx((n - 1) * math.log2(V) / nbytes, rel=1e-5)
    if kind == "char":  # one token per character: bits/char = log2 V exactly
        assert m["test/bits_per_char"] == pytest.approx(math.log2(V), rel=1e-5)
    else:               # BPE merges characters: fewer tokens than characters, fewer bits per char
        assert n < len(text) and m["test/bits_per_char"] < math.log2(V)
    assert m["test/unk_rate"] == 0.0


def test_word_level_reports_the_unk_rate():
    text = "the cat sat on the zebra mat the quokka dog"
    tok, m = evaluate("word", text)
    ids = tok.encode(text)
    assert ids.count(tok.unk_id) == 2  # " zebra", " quokka"
    assert m["test/unk_rate"] == pytest.approx(ids[1:].count(tok.unk_id) / (len(ids) - 1))


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_learned_tokens_are_numbered_in_sorted_order_after_the_specials(kind):
    """WordPiece and Unigram ids come out of HF's trainers in hash-map order (new in every
    process); renumbered, they follow the sorted tokens, and the tokenizer still round-trips."""
    trained = sized(kind).train(iter(TRAIN))
    vocab = trained.hf.get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:len(SPECIALS)] == SPECIALS and sorted(vocab.values()) == list(range(len(vocab)))
    assert by_id[len(SPECIALS):] == sorted(by_id[len(SPECIALS):])
    assert trained.decode(trained.encode(SEEN)) == SEEN


@needs_data("tinyshakespeare", "input.txt")
def test_unigram_gives_the_same_ids_in_every_process():
    """Two processes train the Unigram tokenizer on the same text: the same id for every token
    (HF's trainer alone numbers them differently in every process)."""
    import subprocess
    import sys

    from conftest import DATA_DIR

    code = ("import json, sys; from seqbench.tokenizers import UnigramTokenizer\n"
            "text = open(sys.argv[1], encoding='utf-8').read()[:200_000].splitlines(keepends=True)\n"
            "print(json.dumps(sorted(UnigramTokenizer(vocab_size=500).train(iter(text)).hf.get_vocab().items())))")
    path = str(DATA_DIR / "tinyshakespeare" / "input.txt")
    vocabs = [subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True).stdout
              for _ in range(2)]
    assert len(vocabs[0]) > 1000 and vocabs[0] == vocabs[1]
