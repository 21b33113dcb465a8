"""Classification: final-state head (both directions), padding never changes a prediction,
counting ones is learned, SST-2 runs end to end into MLflow, and every bad input fails before
any MLflow run exists."""

from __future__ import annotations

import math

import pytest
import torch
from mlflow import MlflowClient

from conftest import TINY_CLASSIFY, compose_cfg, needs_data
from seqbench.data.batching import BucketBatchSampler
from seqbench.data.classify import pad_batch
from seqbench.errors import ConfigError, DataError
from seqbench.run import run
from seqbench.tasks.classify import Classifier, top_layer_final
from seqbench.validate import CONF_DIR, validate

HAS_BILSTM = (CONF_DIR / "model" / "bilstm.yaml").is_file()


@pytest.fixture(autouse=True)
def restore_threads():
    """The tiny runs use one thread (robust to a busy machine); give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def runs_in(root):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench")
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


def classifier(bidirectional: bool, num_layers: int = 2, cell: str = "lstm") -> Classifier:
    torch.manual_seed(0)
    return Classifier(vocab_size=10, num_classes=3, head_dropout=0.0,
                      model={"_target_": "seqbench.cells.build_stack", "cell": cell, "hidden_size": 6,
                             "num_layers": num_layers, "bidirectional": bidirectional},
                      embedding={"_target_": "seqbench.models.LearnedEmbedding", "dim": 4}).eval()


def test_top_layer_final_takes_both_directions_of_the_last_layer():
    L, D, B, H = 3, 2, 4, 5
    h = torch.arange(L * D, dtype=torch.float).view(L * D, 1, 1).expand(L * D, B, H)
    out = top_layer_final((h, torch.zeros_like(h)), L, D)
    assert out.shape == (B, D * H)
    assert out[:, :H].eq(4).all() and out[:, H:].eq(5).all()  # rows (layer 2, fwd) and (layer 2, bwd)
    assert top_layer_final(h[:1], 1, 1).shape == (B, H)


def test_pad_batch_pads_and_reports_lengths():
    batch = pad_batch([(torch.tensor([5, 6, 7]), torch.tensor(1)), (torch.tensor([8]), torch.tensor(0))], pad_id=0)
    assert batch["x"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["lengths"].tolist() == [3, 1] and batch["y"].tolist() == [1, 0]


def test_bucket_batches_cover_every_example_once_with_similar_lengths():
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = BucketBatchSampler(lengths, batch_size=16, shuffle=True, seed=0, pool=10)
    first, second = list(sampler), list(sampler)  # two epochs
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000))
    assert first != second  # reshuffled per epoch, and the same again for the same seed:
    assert list(BucketBatchSampler(lengths, 16, True, seed=0, pool=10)) == first
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 40  # random batches of 16 would span ~175
    evaluation = list(BucketBatchSampler(lengths, 16, shuffle=False))
    assert [lengths[i] for b in evaluation for i in b] == sorted(lengths)
    ranks = [set(i for b in BucketBatchSampler(lengths, 16, True, 0, rank=r, world_size=2) for i in b)
             for r in (0, 1)]
    assert not ranks[0] & ranks[1] and len(ranks[0]) + len(ranks[1]) >= 1000 - 16


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_does_not_change_the_prediction(bidirectional, cell):
    """A sequence classified alone gives the same logits as inside a padded batch: the final
    state of each direction is read at the sequence's true end."""
    module = classifier(bidirectional, cell=cell)
    short, long = torch.tensor([4, 5, 6]), torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])
    batch = pad_batch([(long, torch.tensor(0)), (short, torch.tensor(0))], pad_id=0)
    with torch.no_grad():
        together = module(batch["x"], batch["lengths"])
        alone = module(short.unsqueeze(0), torch.tensor([3]))
        garbage = batch["x"].clone()
        garbage[1, 3:] = 9  # whatever sits past the end must not matter
        other_padding = module(garbage, batch["lengths"])
    assert torch.allclose(together[1], alone[0], atol=1e-6)
    assert torch.allclose(together, other_padding, atol=1e-6)


def test_counting_ones_is_learned_by_an_lstm(tmp_path):
    """12-bit strings, 13 classes, 300 Adam steps (3 epochs x 100 batches of 32); held-out strings are
    never training strings (8 bits: 256 strings, all seen in training), so they count 3..9 ones."""
    cfg = compose_cfg([*TINY_CLASSIFY, "data=counting_ones", "data.length=12", "data.num_train=3200",
                       "data.num_val=200", "data.num_test=300", "model=lstm", "model.hidden_size=32",
                       "task.batch_size=32", "optimizer.lr=0.01", "task.head_dropout=0.0", "trainer.max_epochs=3",
                       "logger=none"], root=tmp_path)
    result = run(cfg)
    assert result["test/accuracy"] >= 0.9, result
    assert result["test/f1_macro"] >= 0.85


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store shared by the runs of this module (creating a store takes seconds)."""
    root = tmp_path_factory.mktemp("store")
    (root / "empty").mkdir()
    return root


@needs_data("sst", "train.txt")
@pytest.mark.parametrize("model,embedding,tokenizer,extra", [
    ("lstm", "learned", "char", []),   # the defaults: character tokens
    pytest.param("bilstm", "word2vec", "word", ["embedding.epochs=1"],
                 marks=pytest.mark.skipif(not HAS_BILSTM, reason="conf/model/bilstm.yaml not there yet")),
])
def test_sst2_end_to_end_logs_accuracy_to_mlflow(store, model, embedding, tokenizer, extra):
    cfg = compose_cfg([*TINY_CLASSIFY, "data=sst2", f"model={model}", f"embedding={embedding}",
                       f"tokenizer={tokenizer}", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                       "trainer.limit_test_batches=2", "task.eval_batch_size=32", "task.max_length=64",
                       "embedding.dim=16", *extra], root=store)
    result = run(cfg)
    client, _ = runs_in(store)
    r = client.get_run(result["run_id"])
    assert r.info.status == "FINISHED"
    assert r.info.run_name == f"classify/sst2/{tokenizer}/{model}/s0"
    assert r.data.tags["task"] == "classify" and r.data.tags["embedding"] == embedding
    for key in ("val/accuracy", "val/f1_macro", "test/accuracy", "test/f1_macro", "test/loss"):
        assert key in r.data.metrics and math.isfinite(r.data.metrics[key]), key
        assert 0.0 <= result[key] <= (1.0 if "loss" not in key else 10.0)
    artifacts = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "tokenizer.json", "checkpoints"} <= artifacts and "samples.txt" not in artifacts
    best = client.download_artifacts(r.info.run_id, "checkpoints/best.ckpt", str(store / r.info.run_id))
    ckpt = torch.load(best, weights_only=True)  # hyper-parameters are plain values
    assert ckpt["hyper_parameters"]["num_classes"] == 2
    restored = Classifier.load_from_checkpoint(best, weights_only=True)
    assert restored.stack.bidirectional is (model == "bilstm")


def test_bidirectional_classifier_runs_in_process(tmp_path):
    cfg = compose_cfg([*TINY_CLASSIFY, "data=counting_ones", "data.num_train=64", "data.num_val=32",
                       "data.num_test=32", "model=lstm", "model.bidirectional=true", "embedding=onehot",
                       "logger=none"], root=tmp_path)
    validate(cfg)  # bidirectional is fine for classification
    result = run(cfg)
    assert math.isfinite(result["test/loss"]) and 0 <= result["test/accuracy"] <= 1


def test_bag_of_embeddings_is_the_mean_of_the_embedded_tokens():
    """model=boe: the head reads mean_t E[x_t] over each text's own tokens (padding excluded)."""
    cfg = compose_cfg([*TINY_CLASSIFY, "data=counting_ones", "model=boe", "embedding.dim=6"])
    module = Classifier(vocab_size=9, model=dict(cfg.model), embedding=dict(cfg.embedding), num_classes=3)
    module.eval()
    tokens, lengths = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]]), torch.tensor([4, 2])
    E = module.embedding.embed.weight
    means = torch.stack([E[tokens[0]].mean(0), E[tokens[1, :2]].mean(0)])
    assert torch.allclose(module(tokens, lengths), module.head(means), atol=1e-6)
    assert sum(p.numel() for p in module.stack.parameters()) == 0  # parameters: embedding + head only


@needs_data("sst", "train.txt")
def test_bag_of_embeddings_with_pretrained_vectors_end_to_end(store, tmp_path):
    """The BoE row with a vector file (GloVe text format): the run logs how much of the vocabulary
    the file covered."""
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("the 0.1 0.2 0.3 0.4\nfilm 0.5 0.1 -0.2 0.0\ngood 1 1 1 1\nbad -1 -1 -1 -1\n")
    cfg = compose_cfg([*TINY_CLASSIFY, "data=sst2", "model=boe", "embedding=pretrained", f"embedding.path={vectors}",
                       "tokenizer=word", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                       "trainer.limit_test_batches=2", "task.max_length=64"], root=store)
    result = run(cfg)
    r = runs_in(store)[0].get_run(result["run_id"])
    assert r.info.status == "FINISHED" and 0 <= result["test/accuracy"] <= 1
    metrics = r.data.metrics
    assert metrics["embedding/vocab_types"] > 1000  # SST's training words
    assert 0 < metrics["embedding/oov_types"] <= metrics["embedding/vocab_types"] - 4  # the, film, good, bad found
    assert 0 < metrics["embedding/oov_rate"] < 1


def test_selection_on_accuracy_picks_the_epoch_of_best_validation_accuracy(store):
    """selection=accuracy (Kim 2014, Tai 2015: the epoch chosen by dev accuracy): the checkpoint
    tested and early stopping follow val/accuracy (higher is better), and the run logs
    val/best_accuracy = the maximum of its val/accuracy history."""
    cfg = compose_cfg([*TINY_CLASSIFY, "data=counting_ones", "data.num_train=128", "data.num_val=64",
                       "data.num_test=32", "embedding=onehot", "trainer.max_epochs=4", "selection=accuracy",
                       "early_stopping.patience=2"], root=store)
    result = run(cfg)
    client = runs_in(store)[0]
    history = [m.value for m in client.get_metric_history(result["run_id"], "val/accuracy")]
    r = client.get_run(result["run_id"])
    assert r.data.metrics["val/best_accuracy"] == pytest.approx(max(history))
    assert "val/best_loss" not in r.data.metrics
    note = r.data.tags["mlflow.note.content"]
    assert "early stopping on val/accuracy (patience 2" in note and "checkpoint of best val/accuracy" in note
    best = client.download_artifacts(r.info.run_id, "checkpoints/best.ckpt", str(store / "dl"))
    assert torch.load(best, weights_only=False)["epoch"] == history.index(max(history))  # ties: the earlier


@pytest.mark.parametrize("overrides,error,message", [
    (["task=lm", "selection=accuracy"], ConfigError,
     r"unknown selection \(a validation metric of task=lm\) 'accuracy'; valid choices: loss"),
    (["task=classify", "data=counting_ones", "selection=bleu"], ConfigError,
     r"unknown selection \(a validation metric of task=classify\) 'bleu'; valid choices: accuracy, f1_macro, loss"),
    (["task=classify", "data=timemachine"], ConfigError,
     "data=timemachine is a dataset for task=lm, not task=classify; datasets for task=classify: "),
    (["task=lm", "data=sst2"], ConfigError, "data=sst2 is a dataset for task=classify, not task=lm; "
                                            "datasets for task=lm: "),
    (["task=lm", "data=copy"], ConfigError, "data=copy is a dataset for task=copy, not task=lm"),
    (["task=classify", "data=sst2", "task.max_length=0"], ConfigError, "task.max_length=0 must be >= 1"),
    (["task=classify", "data=mr", "data.fold=12"], ConfigError, r"data.fold=12 must be in \[0, 9\]"),
    (["task=classify", "data=imdb", "paths.data_dir=EMPTY"], DataError, "no local copy at EMPTY/imdb"),
    (["task=classify", "data=sst2", "paths.data_dir=EMPTY"], DataError, "no local copy at EMPTY/sst"),
    (["task=classify", "data=counting_ones", "tokenizer=bpe", "embedding=onehot", "embedding.max_vocab=100"],
     ConfigError, "embedding=onehot: the vocabulary has"),
    (["task=classify", "data=sst5", "tokenizer=bpe", "tokenizer.vocab_size=10"], ConfigError,
     "tokenizer.vocab_size=10 is too small"),
])
def test_bad_input_is_one_clear_error_and_no_mlflow_run(store, overrides, error, message):
    empty = str(store / "empty")
    overrides = [o.replace("EMPTY", empty) for o in overrides]
    before = len(runs_in(store)[1])
    with pytest.raises(error, match=message.replace("EMPTY", empty)) as e:
        run(compose_cfg([*overrides, "trainer.enable_progress_bar=false"], root=store))
    assert "\n" not in str(e.value)
    assert len(runs_in(store)[1]) == before  # no run, not even a failed one
