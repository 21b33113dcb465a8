"""The agreement corpus: deterministic, split-disjoint streams, and an exact grammar checker."""

from __future__ import annotations

import random

from seqbench.data.synthetic import AgreementCorpus, grammatical_rate, is_grammatical, sentence


def test_same_seed_same_corpus_other_seed_other_corpus():
    a = AgreementCorpus(seed=3, num_train=50, num_val=10, num_test=10)()
    b = AgreementCorpus(seed=3, num_train=50, num_val=10, num_test=10)()
    c = AgreementCorpus(seed=4, num_train=50, num_val=10, num_test=10)()
    assert a["train"]["text"] == b["train"]["text"]
    assert a["train"]["text"] != c["train"]["text"]
    assert [len(a[s]) for s in ("train", "validation", "test")] == [50, 10, 10]
    assert a["validation"]["text"] != a["test"]["text"]


def test_every_generated_sentence_is_grammatical():
    rng = random.Random(0)
    sentences = [sentence(rng, 3) for _ in range(500)]
    assert all(map(is_grammatical, sentences))
    assert max(len(s.split()) for s in sentences) > 12  # attractors do occur


def test_checker_rejects_agreement_errors_and_garbage():
    assert is_grammatical("the dog near the cats sees the bird .")
    assert not is_grammatical("the dog near the cats see the bird .")  # agrees with the attractor
    assert is_grammatical("the dogs that the cat sees know the king .")
    assert not is_grammatical("the dogs that the cat see know the king .")  # relative clause
    assert not is_grammatical("the dogs that the cat sees knows the king .")
    assert not is_grammatical("the children .")
    assert not is_grammatical("dog sees the cat .")
    assert not is_grammatical("the dog sees the cat")


def test_grammatical_rate_counts_complete_sentences():
    text = "the dog sees the cat .\nthe dogs sees happy .\nthe cat kno"
    assert grammatical_rate(text) == (0.5, 2)
    assert grammatical_rate("no sentence here") == (0.0, 0)
