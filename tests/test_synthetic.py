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


def test_a_corpus_is_loaded_once_per_process_for_the_same_settings(monkeypatch, tmp_path):
    """The jobs of a multirun share a process: a second load of the same settings is the first's
    data, not drawn again; other settings, or another SEQBENCH_DATA_DIR, load anew; and a
    caller's changes to its dict do not reach the next caller."""
    drawn = []
    generate = AgreementCorpus.generate
    monkeypatch.setattr(AgreementCorpus, "generate",
                        lambda self, split, n: drawn.append(split) or generate(self, split, n))
    settings = dict(seed=987_654, num_train=40, num_val=8, num_test=8)
    first = AgreementCorpus(**settings)()
    n = len(drawn)
    assert set(drawn) == {"train", "validation", "test"}
    again = AgreementCorpus(**settings)()
    assert len(drawn) == n  # nothing drawn again
    assert all(first[s]["text"] == again[s]["text"] for s in ("train", "validation", "test"))
    again["train"] = again["test"]
    assert AgreementCorpus(**settings)()["train"]["text"] == first["train"]["text"]
    AgreementCorpus(**{**settings, "seed": 987_655})()
    assert len(drawn) > n
    n = len(drawn)
    monkeypatch.setenv("SEQBENCH_DATA_DIR", str(tmp_path))
    AgreementCorpus(**settings)()
    assert len(drawn) > n


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


# -- every generated corpus is leak-free -------------------------------------------------------
def generated_corpus_classes():
    """Every GeneratedCorpus subclass of the seqbench.data package (its modules imported first)."""
    import importlib
    import pkgutil

    import seqbench.data
    from seqbench.data.sources import GeneratedCorpus

    for module in pkgutil.iter_modules(seqbench.data.__path__):
        importlib.import_module(f"seqbench.data.{module.name}")
    found, todo = [], list(GeneratedCorpus.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(found), key=lambda c: c.__name__)


def test_every_generated_corpus_holds_out_only_examples_absent_from_train():
    classes = generated_corpus_classes()
    assert {"AgreementCorpus", "CountingOnes", "AddingProblem", "CopyMemory"} <= {c.__name__ for c in classes}
    #: generators whose default length has fewer distinct examples than 3,600 (2^10 bit strings)
    space = {"CountingBits": {"length": 16}}
    for cls in classes:
        corpus = cls(seed=1, num_train=3000, num_val=300, num_test=300, **space.get(cls.__name__, {}))
        data = corpus()
        keys = {split: corpus.example_keys(data[split]) for split in ("train", "validation", "test")}
        assert [len(keys[s]) for s in ("train", "validation", "test")] == [3000, 300, 300], cls.__name__
        train = set(keys["train"])
        assert not train & set(keys["validation"]) and not train & set(keys["test"]), cls.__name__
        assert not set(keys["validation"]) & set(keys["test"]), cls.__name__
        again = cls(seed=1, num_train=3000, num_val=300, num_test=300, **space.get(cls.__name__, {}))()
        assert again["test"]["text"] == data["test"]["text"], cls.__name__  # still deterministic


def test_agreement_corpus_at_its_defaults_is_leak_free():
    data = AgreementCorpus()()  # 6,000 / 500 / 500: 50 test and 45 validation sentences leaked before
    train = set(data["train"]["text"])
    assert not train & set(data["validation"]["text"]) and not train & set(data["test"]["text"])
    assert not set(data["validation"]["text"]) & set(data["test"]["text"])
    assert [len(data[s]) for s in ("train", "validation", "test")] == [6000, 500, 500]


def test_a_held_out_split_that_cannot_be_filled_is_one_error_line():
    import pytest

    from seqbench.data.synthetic import CountingOnes
    from seqbench.errors import ConfigError

    with pytest.raises(ConfigError) as e:  # 4-bit strings: 16 exist, 400 training draws see them all
        CountingOnes(seed=0, num_train=400, num_val=20, num_test=20, length=4)()
    assert "\n" not in str(e.value) and str(e.value).startswith("data=counting_ones: only ")
    assert "data.length=4" in str(e.value) and "data.num_val=20" in str(e.value)
