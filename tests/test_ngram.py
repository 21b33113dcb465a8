"""task=ngram: the count-based reference LM. Probabilities sum to one, match hand-computed values
(add-k bigram, Kneser–Ney continuation counts and discounts on "banana"), order 1 with add-k is the
smoothed unigram cross-entropy of the held-out stream, counts survive a checkpoint, a run goes end to
end through seqbench.run.run, and bad input is one line before any run."""

from __future__ import annotations

import math
import random

import pytest
import torch
from mlflow import MlflowClient

from conftest import compose_cfg
from seqbench.data.lm import StreamWindows
from seqbench.errors import ConfigError
from seqbench.run import build, run
from seqbench.tasks.ngram import NgramCounts, NgramLM
from seqbench.validate import datasets_for

pytestmark = pytest.mark.usefixtures("one_thread")

#: a small synthetic-grammar corpus: real code paths, a few seconds on 2 cores
TINY_NGRAM = ["task=ngram", "data.num_train=300", "data.num_val=40", "data.num_test=60",
              "task.generate.num_samples=1", "task.generate.max_new_tokens=20", "trainer.enable_progress_bar=false",
              "num_threads=1"]


def banana(order: int, smoothing: str = "kneser_ney", **kw) -> tuple[NgramCounts, dict[str, int]]:
    """ "banana" over the vocabulary a, b, n, x (x never occurs)."""
    ids = {c: i for i, c in enumerate("abnx")}
    model = NgramCounts(len(ids), order, smoothing, **kw)
    model.count([ids[c] for c in "banana"])
    return model, ids


# -- probabilities -------------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", ["kneser_ney", "add_k"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one_over_the_vocabulary(smoothing, order):
    """Brute force over every token, for seen, unseen and short contexts; the dense distribution
    (decoding) equals the per-token probabilities (evaluation)."""
    rng = random.Random(order)
    V = 7  # tokens 5 and 6 never occur in training
    model = NgramCounts(V, order, smoothing, k=0.5)
    model.count([rng.choice([0, 0, 1, 2, 3, 4]) for _ in range(500)])
    contexts = [(), (0,), (6,), (1, 2), (0, 0, 0), (6, 5, 4), (3, 1, 0, 2), tuple(rng.choices(range(V), k=5))]
    for h in contexts:
        probs = torch.tensor([model.prob(h, w) for w in range(V)], dtype=torch.float64)
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-12), h
        assert bool((probs > 0).all()), h
        assert torch.allclose(model.distribution(h), probs, rtol=0, atol=1e-15), h


def test_add_k_bigram_by_hand():
    """P(w | h) = (c(h w) + k) / (c(h •) + k V): c(a •) = 2 (an, an), V = 4, k = 0.5."""
    model, i = banana(2, "add_k", k=0.5)
    a, b, n, x = (i[c] for c in "abnx")
    assert model.prob([a], n) == pytest.approx((2 + 0.5) / (2 + 2))
    assert model.prob([a], a) == pytest.approx(0.5 / 4)
    assert model.prob([b], a) == pytest.approx((1 + 0.5) / (1 + 2))
    assert model.prob([x], b) == pytest.approx(1 / 4)                  # unseen context: uniform
    assert model.prob([n, a], n) == model.prob([a], n)                  # only the last order-1 tokens count
    assert model.prob([], a) == pytest.approx((3 + 0.5) / (6 + 2))       # column start: the unigram


def test_kneser_ney_by_hand_on_banana():
    """Bigrams ba, an, na, an, na. Continuation counts N1+(• w): a after b and n -> 2, n after a -> 1,
    b never follows anything -> 0. Discounts n1/(n1 + 2 n2): unigram 1/(1+2) = 1/3 over {2, 1},
    bigram 1/(1+4) = 1/5 over {ba: 1, an: 2, na: 2}."""
    model, i = banana(2)
    a, b, n, x = (i[c] for c in "abnx")
    assert dict(model.order_counts(1)) == {(a,): 2, (n,): 1}
    assert dict(model.order_counts(2)) == {(b, a): 1, (a, n): 2, (n, a): 2}
    assert model.discounts[1:] == pytest.approx([1 / 3, 1 / 5])
    # unigram: (c - 1/3) / 3 + (1/3) * 2 types / 3 * 1/4
    p1 = {a: (2 - 1 / 3) / 3 + 1 / 18, n: (1 - 1 / 3) / 3 + 1 / 18, b: 1 / 18, x: 1 / 18}
    assert p1[a] == pytest.approx(11 / 18) and p1[n] == pytest.approx(5 / 18)
    for w, p in p1.items():
        assert model.prob([], w) == pytest.approx(p)
        assert model.prob([x], w) == pytest.approx(p)                   # unseen context: the lower order
    # bigram after a: c(a n) = 2 of c(a •) = 2, one type: (2 - 1/5)/2 + (1/5)(1/2) P1(w)
    assert model.prob([a], n) == pytest.approx(0.9 + 0.1 * 5 / 18)
    assert model.prob([a], a) == pytest.approx(0.1 * 11 / 18)
    assert model.prob([b], a) == pytest.approx(0.8 + 0.2 * 11 / 18)
    assert model.prob([b], x) == pytest.approx(0.2 / 18)
    # a trigram model estimates its bigrams from continuation counts too: an after b and n, na after a
    tri, _ = banana(3)
    assert dict(tri.order_counts(2)) == {(a, n): 2, (n, a): 1}
    assert dict(tri.order_counts(3)) == {(b, a, n): 1, (a, n, a): 2, (n, a, n): 1}


def test_a_fixed_discount_and_the_counts_survive_a_checkpoint():
    model, i = banana(3, discount=0.75)
    assert model.discounts[1:] == [0.75, 0.75, 0.75]
    state = torch.load(_saved(model.state()), weights_only=True)        # as Lightning reloads a checkpoint
    copy = NgramCounts(4, 3, "kneser_ney", discount=0.75)
    copy.load_state(state)
    assert copy.raw == model.raw and copy.num_counts() == model.num_counts() == 3 + 3 + 3
    for h in [(), (i["a"],), (i["b"], i["a"]), (i["x"], i["n"])]:
        assert torch.equal(copy.distribution(h), model.distribution(h))
    with pytest.raises(ValueError, match="order-3 counts"):
        NgramCounts(4, 2).load_state(state)


def _saved(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_step_returns_log_probabilities_and_carries_the_context():
    """The decoding interface: reading a prompt in one call or token by token gives the same
    distributions; the state holds the last order-1 tokens (-1 before the first)."""
    model, i = banana(3)
    lm = NgramLM(vocab_size=4, order=3)
    lm.ngrams = model
    tokens = torch.tensor([[i["b"], i["a"], i["n"]], [i["n"], i["a"], i["x"]]])
    logp, state = lm.step(tokens)
    assert logp.shape == (2, 3, 4) and torch.allclose(logp.exp().sum(-1), torch.ones(2, 3))
    assert state.tolist() == [[i["a"], i["a"]], [i["n"], i["x"]]]
    _, first = lm.step(tokens[:, :1])
    assert first.tolist() == [[-1, -1], [i["b"], i["n"]]]
    rest, _ = lm.step(tokens[:, 1:], first)
    assert torch.allclose(rest, logp[:, 1:])
    assert logp[0, 1, i["n"]].exp() == pytest.approx(model.prob([i["b"], i["a"]], i["n"]))


# -- end to end ------------------------------------------------------------------------------------------
def test_order_1_add_k_is_the_smoothed_unigram_cross_entropy(tmp_path):
    """test/loss = -Σ_w f_test(w) ln((c_train(w) + k) / (N_train + k V)) over exactly the LM's test
    targets; bits/char = that NLL / (ln 2 · characters)."""
    k = 0.5
    cfg = compose_cfg([*TINY_NGRAM, "task.order=1", "task.smoothing=add_k", f"task.k={k}", "logger=none"],
                      root=tmp_path)
    result = run(cfg)
    _, tokenizer, datamodule, _ = build(cfg)
    train = datamodule.stream("train")["ids"]
    V = tokenizer.vocab_size
    p = (torch.bincount(train, minlength=V).double() + k) / (len(train) + k * V)
    test = StreamWindows(datamodule.stream("test"), cfg.task.eval_batch_size, cfg.task.bptt, split="test")
    nll = -p.log()[test.y].sum()
    assert result["test/loss"] == pytest.approx(float(nll) / test.y.numel(), rel=1e-6)  # logged as float32
    assert result["test/bits_per_char"] == pytest.approx(float(nll) / (math.log(2) * float(test.chars.sum())),
                                                         rel=1e-6)  # logged as float32
    assert result["num_parameters"] == int((p > k / (len(train) + k * V)).sum())   # distinct unigrams seen


def test_ngram_end_to_end_into_mlflow_beats_the_unigram(tmp_path):
    """Through seqbench.run.run: order 3 (Kneser–Ney) far below order 1 in test bits/char; the MLflow
    run has the LM's metrics, primary = test/bits_per_char, samples and a checkpoint that reloads."""
    orders = {}
    for order in (1, 3):
        orders[order] = run(compose_cfg([*TINY_NGRAM, f"task.order={order}", "logger.log_checkpoint=true"],
                                        root=tmp_path))
    for result in orders.values():
        for key in ("val/loss", "val/perplexity", "val/bits_per_char", "val/bits_per_byte", "test/loss",
                    "test/perplexity", "test/bits_per_char", "test/bits_per_byte"):
            assert math.isfinite(result[key]), key
        assert result["epochs_trained"] == 1 and "hidden_size" not in result
        assert "converged" not in result                     # no early stopping: nothing to converge
    assert orders[3]["test/bits_per_char"] < orders[1]["test/bits_per_char"] - 0.5, orders
    assert orders[3]["num_parameters"] > orders[1]["num_parameters"]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seqbench").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    r = runs[1]
    assert r.data.tags["task"] == "ngram" and r.data.tags["primary_metric"].startswith("test/bits_per_char")
    assert r.data.metrics["primary"] == pytest.approx(orders[3]["test/bits_per_char"])
    assert "3-gram counts" in r.data.tags["mlflow.note.content"]
    artifacts = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert {"samples.txt", "config.yaml", "tokenizer.json", "checkpoints"} <= artifacts
    ckpt = torch.load(client.download_artifacts(r.info.run_id, "checkpoints/best.ckpt", str(tmp_path / "dl")),
                      weights_only=True)
    lm = NgramLM(**ckpt["hyper_parameters"])
    lm.on_load_checkpoint(ckpt)
    assert lm.num_parameters() == orders[3]["num_parameters"]


# -- bad input -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.mark.parametrize("overrides,message", [
    (["task.order=0"], "task.order=0 must be an integer >= 1"),
    (["task.order=2.5"], "task.order=2.5 must be an integer >= 1"),
    (["task.smoothing=witten_bell"], "unknown task.smoothing 'witten_bell'; valid choices: add_k, kneser_ney"),
    (["task.discount=1.5"], "task.discount=1.5 must be in (0, 1]"),
    (["task.k=0"], "task.k=0 must be > 0"),
    (["trainer=ddp_cpu"], "task=ngram counts in one process"),
    (["data=sst2"], "data=sst2 is a dataset for task=classify, not task=ngram; datasets for task=ngram: "
                    + ", ".join(datasets_for("lm"))),
])
def test_bad_ngram_config_is_one_line_before_any_run(store, overrides, message):
    with pytest.raises(ConfigError) as e:
        base = [o for o in TINY_NGRAM if not (o.startswith("data.") and overrides[0].startswith("data="))]
        run(compose_cfg([*base, *overrides], root=store))
    assert message in str(e.value) and "\n" not in str(e.value)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench")
    assert exp is None or client.search_runs([exp.experiment_id]) == []
