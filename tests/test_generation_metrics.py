"""Generation-quality metrics against hand-computed values, and the run's sample metrics."""

from __future__ import annotations

import math

import pytest
import torch

from seqbench.metrics.generation import (copy_rate, distinct_n, mean_length, ngram_set, nll_per_char,
                                         repetition_rate, self_bleu, text_metrics)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distinct_n_by_hand():
    texts = ["a b a b", "a c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)   # a b a b a c: {a, b, c}
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)   # ab ba ab | ac
    assert distinct_n(texts, 3) == pytest.approx(2 / 2)   # aba bab
    assert distinct_n(["a"], 2) == 0.0                    # no bigram at all


def test_repetition_rate_by_hand():
    assert repetition_rate(["a b a b", "a c"], n=2) == pytest.approx((1 / 3 + 0) / 2)
    assert repetition_rate(["a b a b a b"], n=4) == pytest.approx(1 - 2 / 3)  # abab baba abab
    assert repetition_rate(["the dog sees the cat ."], n=4) == 0.0
    assert repetition_rate(["too short"], n=4) == 0.0


def test_self_bleu_identical_disjoint_and_single():
    same = ["the dog sees the cat ."] * 3
    assert self_bleu(same) == pytest.approx(100.0)
    assert self_bleu(["a b c d", "e f g h"]) == pytest.approx(0.0)
    assert 0 < self_bleu(["the dog sees the cat .", "the dog sees the bird ."]) < 100
    assert math.isnan(self_bleu(["only one"]))


def test_copy_rate_by_hand():
    train = "the dog sees the cat .\nthe kings like the bird ."
    generated = ["the dog sees the bird ."]    # 4-grams: the dog sees the | dog sees the bird | sees the bird .
    assert copy_rate(generated, train) == pytest.approx(1 / 3)
    assert copy_rate(generated, ngram_set(train)) == pytest.approx(1 / 3)
    assert copy_rate(["the dog sees the cat ."], train) == 1.0
    # word n-grams cross line breaks of the training text like any other whitespace
    assert copy_rate(["cat . the kings"], train) == 1.0


def test_mean_length():
    assert mean_length(["a bb", "ccc dd e"], "words") == pytest.approx(2.5)
    assert mean_length(["a bb", "ccc dd e"], "chars") == pytest.approx(6.0)


class Known(torch.nn.Module):
    """p(next) = softmax(LOGITS) whatever the input: the NLL is known in closed form."""

    LOGITS = torch.tensor([1.0, 0.0, -1.0, 0.5])

    def forward(self, tokens, state=None):
        return self.LOGITS.expand(*tokens.shape, -1), state


def test_nll_per_char_by_hand():
    logp = torch.log_softmax(Known.LOGITS, -1)
    prompt = torch.tensor([[0, 1], [2, 2]])
    new = torch.tensor([[0, 1, 2], [3, 3, 0]])
    expected = -(logp[0] + logp[1] + logp[2] + 2 * logp[3] + logp[0]).item() / (3 + 4)
    assert nll_per_char(Known(), prompt, new, chars=[3, 4]) == pytest.approx(expected, rel=1e-6)
    # with EOS = 3, row 1 is scored up to and including its first EOS only
    expected_eos = -(logp[0] + logp[1] + logp[2] + logp[3]).item() / 5
    assert nll_per_char(Known(), prompt, new, chars=[3, 2], eos_id=3) == pytest.approx(expected_eos, rel=1e-6)


def test_text_metrics_keys_and_grammar():
    texts = ["the dog sees the cat .", "the dogs sees the cat ."]   # the second does not agree
    m = text_metrics([t[4:] for t in texts], texts, ngram_set("the dog sees the cat ."), grammar=True)
    assert m["grammatical_rate"] == pytest.approx(0.5) and m["sentences"] == 2
    assert {"distinct_1", "distinct_2", "distinct_3", "repetition_4", "self_bleu", "mean_words",
            "mean_chars", "copy_4"} <= set(m)
    assert "copy_4" not in text_metrics(texts)


def test_generate_samples_logs_every_metric(make_cfg):
    """The run's sample metrics: every quality metric, under ``sample/``, for any strategy."""
    from seqbench.generation import generate_samples
    from seqbench.run import build

    torch.manual_seed(0)
    cfg = make_cfg("decoding=topk", "data.num_train=50", "task.generate.num_samples=3",
                   "task.generate.max_new_tokens=30")
    corpus, tokenizer, datamodule, module = build(cfg)
    out = generate_samples(cfg, module, tokenizer, train_text=datamodule.split_text("train"))
    m = out["metrics"]
    for key in ("nll_per_char", "distinct_1", "distinct_2", "distinct_3", "repetition_4", "self_bleu",
                "mean_words", "mean_chars", "copy_4", "grammatical_rate", "sentences", "tokens_per_s"):
        assert f"sample/{key}" in m and math.isfinite(m[f"sample/{key}"]), key
    # char tokenizer, no stop token: 30 tokens each, minus the special tokens an untrained model
    # emits (decoded to nothing)
    assert 20 < m["sample/mean_chars"] <= 30
    # an untrained model is near uniform over the vocabulary: NLL per generated token ≈ ln V
    per_token = m["sample/nll_per_char"] * m["sample/mean_chars"] / 30
    assert abs(per_token - math.log(tokenizer.vocab_size)) < 0.5
    assert out["text"].startswith("# decoding=topk prompt='the '") and len(out["texts"]) == 3
    assert "sample/copy_4" not in generate_samples(cfg, module, tokenizer)["metrics"]


def test_stop_token_is_one_known_token():
    from seqbench.errors import ConfigError
    from seqbench.generation import stop_token_id
    from seqbench.tokenizers import CharTokenizer

    tok = CharTokenizer().train(["the dog sees the cat .\n"])
    assert stop_token_id(tok, None) is None
    assert stop_token_id(tok, "\\n") == stop_token_id(tok, "\n") == tok.encode("\n")[0]  # escape as typed
    for bad in ("ab", "z"):  # two tokens; unknown character
        with pytest.raises(ConfigError, match="must be one known token"):
            stop_token_id(tok, bad)
