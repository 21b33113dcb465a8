"""Datasets: the standard split sizes on the shared corpora, the split protocols, the generators,
and one clear DataError for every way a corpus can be missing or broken."""

from __future__ import annotations

import shutil
import time

import pytest
from datasets import Dataset, DatasetDict

from conftest import DATA_DIR, compose_cfg, needs_data
from seqbench.data.mr import MRCorpus, fold_bounds
from seqbench.data.sources import HubCorpus, check_corpus
from seqbench.data.sst import SSTCorpus, binary_label, parse_phrases, parse_tree
from seqbench.data.synthetic import CountingOnes
from seqbench.data.synthetic_longrange import AddingProblem, CopyMemory
from seqbench.data.text import LocalTextCorpus
from seqbench.errors import ConfigError, DataError, instantiate


def load(*overrides):
    return instantiate(compose_cfg(list(overrides)).data)()


def sizes(corpus):
    return tuple(len(corpus[s]) for s in ("train", "validation", "test"))


# -- SST ---------------------------------------------------------------------------------------
def test_parse_tree_takes_root_label_and_leaves():
    text, label = parse_tree("(3 (2 It) (4 (2 -LRB-) (4 (3 great) (2 -RRB-))))")
    assert (text, label) == ("It ( great )", 3)
    assert [binary_label(k) for k in range(5)] == [0, 0, None, 1, 1]


@needs_data("sst", "train.txt")
@pytest.mark.parametrize("name,expected,classes", [("sst5", (8544, 1101, 2210), 5),
                                                   ("sst2", (6920, 872, 1821), 2)])
def test_sst_standard_split_sizes(name, expected, classes):
    corpus = load(f"data={name}")
    assert sizes(corpus) == expected
    assert corpus["train"].features["label"].num_classes == classes
    assert set(corpus["test"]["label"]) == set(range(classes))
    first = corpus["train"][0]
    assert first["text"].startswith("The Rock is destined to be the 21st Century 's new `` Conan ''")
    assert first["label"] == (3 if classes == 5 else 1)  # root label 3: positive


@needs_data("sst", "train.txt")
def test_sst5_labels_are_the_root_labels_of_the_files():
    corpus = load("data=sst5")
    lines = (DATA_DIR / "sst" / "dev.txt").read_text().splitlines()
    assert corpus["validation"]["label"] == [int(line[1]) for line in lines]


def test_parse_phrases_gives_every_node_with_its_label():
    tree = "(3 (2 It) (4 (2 -LRB-) (4 (3 great) (2 -RRB-))))"
    assert parse_phrases(tree) == [("It ( great )", 3), ("It", 2), ("( great )", 4), ("(", 2),
                                   ("great )", 4), ("great", 3), (")", 2)]
    assert parse_phrases(tree)[0] == parse_tree(tree)  # the root is the sentence


@needs_data("sst", "train.txt")
@pytest.mark.parametrize("name, phrases", [("sst2", 77616), ("sst5", 159274)])
def test_sst_phrase_level_training_set(name, phrases):
    """data.train_phrases=true: every distinct labelled phrase of the training trees (SST-2: the
    non-neutral ones), while validation and test stay the standard sentence-level splits."""
    corpus = load(f"data={name}", "data.train_phrases=true")
    sentence_level = load(f"data={name}")
    assert sizes(corpus) == (phrases, *sizes(sentence_level)[1:])
    lines = (DATA_DIR / "sst" / "train.txt").read_text().splitlines()
    # brute force: one phrase per node ("(" in the tree), deduplicated by text
    nodes = [p for line in lines if line.strip() for p in parse_phrases(line)]
    assert sum(line.count("(") for line in lines) == len(nodes)
    keep = (lambda y: True) if name == "sst5" else (lambda y: y != 2)
    assert len({t for t, y in nodes if keep(y)}) == phrases
    assert set(sentence_level["train"]["text"]) <= set(corpus["train"]["text"])  # every sentence is a phrase too
    labels = dict(zip(corpus["train"]["text"], corpus["train"]["label"]))
    first = sentence_level["train"][0]
    assert labels[first["text"]] == first["label"]


# -- MR: 10-fold cross-validation ----------------------------------------------------------------
def test_fold_bounds_partition_the_items():
    n, k = 10662, 10
    bounds = [fold_bounds(n, k, f) for f in range(k)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert sorted({e - s for s, e in bounds}) == [1066, 1067]


@needs_data("mr", "rt-polarity.pos")
def test_mr_folds_are_disjoint_deterministic_and_cover_the_corpus():
    path = str(DATA_DIR / "mr")
    label_names = ["negative", "positive"]
    a = MRCorpus(name="mr", task="classify", path=path, label_names=label_names, fold=0)()
    again = MRCorpus(name="mr", task="classify", path=path, label_names=label_names, fold=0)()
    other = MRCorpus(name="mr", task="classify", path=path, label_names=label_names, fold=3)()
    assert sum(sizes(a)) == 10662 and sizes(a) == (8635, 960, 1067)
    assert a["test"]["text"] == again["test"]["text"]       # fixed shuffle seed
    assert not set(a["test"]["text"]) & set(other["test"]["text"]) - {""}
    splits = [set(zip(a[s]["text"], a[s]["label"])) for s in ("train", "validation", "test")]
    assert not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    assert sum(a[s]["label"].count(1) for s in ("train", "validation", "test")) == 5331


def test_mr_fold_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.fold=10 must be in \[0, 9\]"):
        MRCorpus(fold=10)


# -- contiguous text corpora ---------------------------------------------------------------------
@needs_data("tinyshakespeare", "input.txt")
def test_tinyshakespeare_first_90_percent_trains_last_10_held_out():
    corpus = load("data=tinyshakespeare")
    text = (DATA_DIR / "tinyshakespeare" / "input.txt").read_text()
    train, val, test = (corpus[s]["text"][0] for s in ("train", "validation", "test"))
    assert train + val + test == text
    assert len(train) == int(0.9 * len(text)) and abs(len(val) - len(test)) <= 1


@needs_data("timemachine", "timemachine.txt")
def test_timemachine_holds_out_the_last_10_percent():
    corpus = load("data=timemachine")
    n = sum(len(corpus[s]["text"][0]) for s in ("train", "validation", "test"))
    assert abs(len(corpus["train"]["text"][0]) - 0.9 * n) <= 1


# -- generated corpora -------------------------------------------------------------------------
def test_counting_ones_labels_count_the_ones():
    corpus = CountingOnes(seed=1, num_train=300, num_val=50, num_test=50, length=10, min_length=3)()
    again = CountingOnes(seed=1, num_train=300, num_val=50, num_test=50, length=10, min_length=3)()
    assert corpus["train"]["text"] == again["train"]["text"]
    assert corpus["train"].features["label"].num_classes == 11
    for row in corpus["train"]:
        assert row["label"] == row["text"].count("1") and set(row["text"]) <= {"0", "1"}
        assert 3 <= len(row["text"]) <= 10
    assert len(set(corpus["train"]["label"])) == 11
    assert corpus["validation"]["text"] != corpus["test"]["text"]


def test_adding_problem_marks_one_value_per_half_and_sums_them():
    data = AddingProblem(seed=0, num_train=100, num_val=10, num_test=10, length=20)()
    for row in data["train"]:
        marked = [i for i, m in enumerate(row["markers"]) if m]
        assert len(marked) == 2 and marked[0] < 10 <= marked[1]
        assert row["target"] == pytest.approx(sum(row["values"][i] for i in marked), rel=1e-6)
    assert AddingProblem(seed=0, num_train=100, num_val=10, num_test=10, length=20)()["train"]["target"] \
        == data["train"]["target"]
    assert AddingProblem(seed=1, num_train=100, num_val=10, num_test=10, length=20)()["train"]["target"] \
        != data["train"]["target"]


def test_copy_memory_targets_repeat_the_symbols_after_the_delay():
    data = CopyMemory(seed=0, num_train=20, num_val=5, num_test=5, num_symbols=4, copy_length=3, delay=7)()
    for row in data["train"]:
        x, y = row["inputs"], row["targets"]
        assert len(x) == len(y) == 3 + 7 + 3
        assert all(1 <= s <= 4 for s in x[:3]) and y[-3:] == x[:3] and not any(y[:-3])
        assert x[3 + 7 - 1] == 5 and not any(x[3:9]) and not any(x[10:])
        assert len(row["text"]) == 13 and row["text"][9] == ":"


# -- sources: local snapshot of a hub repo, errors ---------------------------------------------------
def test_local_snapshot_of_a_hub_repository_loads_with_a_carved_validation(tmp_path):
    snap = tmp_path / "imdb" / "plain_text"
    snap.mkdir(parents=True)
    rows = {"text": [f"review {i}" for i in range(40)], "label": [i % 2 for i in range(40)]}
    Dataset.from_dict(rows).to_parquet(snap / "train-00000-of-00001.parquet")
    Dataset.from_dict(rows).to_parquet(snap / "test-00000-of-00001.parquet")
    Dataset.from_dict(rows).to_parquet(snap / "unsupervised-00000-of-00001.parquet")
    corpus = load("data=imdb", f"data.path={tmp_path / 'imdb'}")
    assert sizes(corpus) == (36, 4, 40)
    assert corpus["train"].features["label"].names == ["neg", "pos"]
    assert not set(corpus["train"]["text"]) & set(corpus["validation"]["text"])


@pytest.mark.parametrize("name,hub_id", [("imdb", "stanfordnlp/imdb"), ("wikitext2", "Salesforce/wikitext")])
def test_hub_only_dataset_offline_names_the_path_and_variable(tmp_path, name, hub_id):
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        load(f"data={name}", f"paths.data_dir={tmp_path}")
    msg = str(e.value)
    assert f"no local copy at {tmp_path}/" in msg and "SEQBENCH_DATA_DIR" in msg and hub_id in msg
    assert "\n" not in msg
    assert time.perf_counter() - start < 10  # no long retry loop


@needs_data("sst", "train.txt")
def test_broken_sst_copy_names_the_file_and_offset(tmp_path):
    sst = tmp_path / "sst"
    shutil.copytree(DATA_DIR / "sst", sst)
    (sst / "dev.txt").chmod(0o644)
    (sst / "dev.txt").write_bytes(b"(2 (2 ok) (2 fine))\n(3 caf\xe9)\n")
    with pytest.raises(DataError, match=r"dev.txt is not valid UTF-8: undecodable byte 0xe9 at offset 26"):
        SSTCorpus(name="sst5", task="classify", path=str(sst), label_names=list("abcde"))()
    (sst / "dev.txt").write_text("\n \n")
    with pytest.raises(DataError, match="dev.txt is empty"):
        SSTCorpus(name="sst5", task="classify", path=str(sst), label_names=list("abcde"))()
    (sst / "dev.txt").write_text("not a tree\n")
    with pytest.raises(DataError, match="dev.txt line 1: not a labelled PTB tree"):
        SSTCorpus(name="sst5", task="classify", path=str(sst), label_names=list("abcde"))()


def test_empty_split_or_missing_label_is_a_data_error():
    ok = Dataset.from_dict({"text": ["a b"], "label": [0]})
    with pytest.raises(DataError, match="corpus x: the validation split is empty"):
        check_corpus(DatasetDict(train=ok, validation=Dataset.from_dict({"text": [" "], "label": [0]}),
                                 test=ok), "x")
    with pytest.raises(DataError, match="no 'label' column"):
        check_corpus(DatasetDict(train=ok, validation=ok, test=ok.remove_columns("label")), "x", labelled=True)
    with pytest.raises(DataError, match="has no validation split"):
        check_corpus(DatasetDict(train=ok, test=ok), "x")


def test_local_text_file_with_hub_fallback_prefers_the_local_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcdefghij" * 10)
    corpus = LocalTextCorpus(name="t", path=str(f), hub_id="no/such-dataset")()
    assert len(corpus["train"]["text"][0]) == 90
    with pytest.raises(DataError, match=r"no local copy at .*missing.txt.*'no/such-dataset'"):
        LocalTextCorpus(name="t", path=str(tmp_path / "missing.txt"), hub_id="no/such-dataset")()


def test_hub_corpus_without_hub_id_or_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=f"corpus not found at {tmp_path}/none"):
        HubCorpus(name="x", path=str(tmp_path / "none"))()
