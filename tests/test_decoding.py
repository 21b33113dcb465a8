"""Decoding strategies against references: greedy limits, sampling distributions, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from seqbench.decoding import Beam, Greedy, Sample, TopK, TopP
from seqbench.errors import ConfigError
from seqbench.tasks.lm import LanguageModel


pytestmark = pytest.mark.usefixtures("one_thread")  # step-by-step decoding of tiny models


def tiny_lm(cell: str = "lstm", vocab: int = 7, hidden: int = 16, seed: int = 0, sharpen: float = 3.0):
    """A real recurrent LM with random weights; ``sharpen`` scales the head so logits are spread."""
    torch.manual_seed(seed)
    model = LanguageModel(vocab, {"_target_": "seqbench.cells.build_stack", "cell": cell, "name": cell,
                                  "hidden_size": hidden},
                          {"_target_": "seqbench.models.LearnedEmbedding", "dim": 8})
    with torch.no_grad():
        model.head.weight.mul_(sharpen)
    return model.eval()


class FixedLM:
    """Stateless toy: the same next-token logits at every step (a known distribution)."""

    def __init__(self, logits):
        self.logits = torch.as_tensor(logits, dtype=torch.float)
        self.calls = 0

    def step(self, tokens, state=None):
        self.calls += 1
        B, T = tokens.shape
        state = torch.zeros(1, B, 1) if state is None else state
        return self.logits.expand(B, T, -1).clone(), state


LOGITS = [2.0, 1.4, 1.0, 0.3, -0.2, -1.0]
PROMPTS = torch.tensor([[1, 2], [3, 0], [4, 4], [5, 6]])


def softmax(z, temperature=1.0):
    e = np.exp((np.asarray(z) - np.max(z)) / temperature)
    return e / e.sum()


def draw(strategy, model, n_rows=4000, steps=5, seed=0):
    """Counts of every token over n_rows × steps draws."""
    gen = torch.Generator().manual_seed(seed)
    out = strategy.generate(model, torch.zeros(n_rows, 1, dtype=torch.long), steps, generator=gen)
    return np.bincount(out.flatten().numpy(), minlength=len(LOGITS))


def assert_matches(counts, probs):
    """Chi-square goodness of fit on the support of ``probs``; nothing drawn outside it."""
    support = probs > 0
    assert counts[~support].sum() == 0, f"tokens outside the allowed set: {counts}"
    if support.sum() == 1:
        return
    expected = probs[support] / probs[support].sum() * counts.sum()
    p = chisquare(counts[support], expected).pvalue
    assert p > 0.01, f"counts {counts} do not fit {probs} (p={p:.4g})"


# -- greedy limits ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell,seed", [("lstm", 2), ("gru", 5)])
def test_greedy_limits_agree(cell, seed):
    model = tiny_lm(cell, seed=seed)
    reference = Greedy().generate(model, PROMPTS, 30)
    # preconditions: logits distinct along the greedy path (the T -> 0 limit is then the argmax:
    # a gap of 1e-2 at T = 1e-4 leaves the runner-up a probability ~ e^-100), varied output
    seqs = torch.cat([PROMPTS, reference], 1)
    top2 = model(seqs)[0][:, PROMPTS.shape[1] - 1:-1].topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 1e-2
    assert len(set(reference.flatten().tolist())) >= 4
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(Beam(beam_width=1).generate(model, PROMPTS, 30), reference)
    assert torch.equal(TopK(k=1).generate(model, PROMPTS, 30, generator=gen()), reference)
    assert torch.equal(Sample(temperature=1e-4).generate(model, PROMPTS, 30, generator=gen()), reference)
    assert torch.equal(TopP(p=1e-6).generate(model, PROMPTS, 30, generator=gen()), reference)


def test_greedy_equals_stepwise_argmax_of_full_forward():
    """The incremental state path equals re-running the whole prefix (the reference)."""
    model = tiny_lm("lstm")
    out = Greedy().generate(model, PROMPTS, 12)
    seq = PROMPTS.clone()
    for _ in range(12):
        nxt = model(seq)[0][:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq[:, PROMPTS.shape[1]:])


# -- sampling distributions ------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [Sample(), TopK(k=len(LOGITS)), TopK(k=100), TopP(p=1.0)],
                         ids=["sample", "topk=V", "topk>V", "topp=1"])
def test_unrestricted_sampling_matches_softmax(strategy):
    assert_matches(draw(strategy, FixedLM(LOGITS)), softmax(LOGITS))


def test_temperature_sharpens_as_softmax_of_scaled_logits():
    assert_matches(draw(Sample(temperature=0.5), FixedLM(LOGITS)), softmax(LOGITS, 0.5))


@pytest.mark.parametrize("k,temperature", [(1, 1.0), (3, 1.0), (3, 0.7), (4, 2.0)])
def test_topk_samples_renormalised_top_k(k, temperature):
    probs = softmax(LOGITS, temperature)
    probs[np.argsort(-probs)[k:]] = 0  # the reference: zero all but the k largest
    assert_matches(draw(TopK(k=k, temperature=temperature), FixedLM(LOGITS)), probs)


@pytest.mark.parametrize("p,temperature", [(0.3, 1.0), (0.6, 1.0), (0.9, 1.0), (0.6, 1.5)])
def test_topp_samples_renormalised_nucleus(p, temperature):
    probs = softmax(LOGITS, temperature)
    order = np.argsort(-probs)
    mass, keep = 0.0, []
    for i in order:  # smallest prefix of the sorted distribution reaching p
        keep.append(i)
        mass += probs[i]
        if mass >= p:
            break
    ref = np.zeros_like(probs)
    ref[keep] = probs[keep]
    assert 0 < len(keep) < len(LOGITS)
    assert_matches(draw(TopP(p=p, temperature=temperature), FixedLM(LOGITS)), ref)


def test_topk_topp_stay_in_allowed_set_on_a_real_lm():
    model = tiny_lm("gru", sharpen=1.0)
    prompt = PROMPTS.repeat(16, 1)
    for strategy in (TopK(k=2), TopP(p=0.5)):
        out = strategy.generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
        seqs = torch.cat([prompt, out], 1)
        logits = model(seqs)[0][:, prompt.shape[1] - 1:-1]
        allowed = torch.isfinite(strategy.filter_logits(logits.reshape(-1, logits.shape[-1])))
        assert allowed.gather(1, out.reshape(-1, 1)).all()
        assert (allowed.sum(-1) < logits.shape[-1]).all()  # the filter did cut something


def test_sampling_is_deterministic_for_a_seed():
    model = tiny_lm("lstm", sharpen=1.0)
    run = lambda s: TopP(p=0.9).generate(model, PROMPTS, 25, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_eos_ends_a_row_and_stops_when_all_rows_ended():
    model = FixedLM([0.0, 0.0, 9.0])  # EOS (id 2) is the argmax
    out = Greedy().generate(model, torch.zeros(3, 2, dtype=torch.long), 10, eos_id=2)
    assert (out == 2).all() and model.calls == 1  # prompt read once, no step after all ended


# -- bad parameters --------------------------------------------------------------------------
@pytest.mark.parametrize("make,fragment", [
    (lambda: Sample(temperature=0.0), "decoding.temperature=0.0 must be > 0"),
    (lambda: TopK(k=0), "decoding.k=0 must be an integer >= 1"),
    (lambda: TopK(k=2.5), "decoding.k=2.5 must be an integer >= 1"),
    (lambda: TopK(k=3, temperature=-1), "decoding.temperature=-1 must be > 0"),
    (lambda: TopP(p=0.0), "decoding.p=0.0 must be in (0, 1]"),
    (lambda: TopP(p=1.5), "decoding.p=1.5 must be in (0, 1]"),
    (lambda: Beam(beam_width=0), "decoding.beam_width=0 must be an integer >= 1"),
    (lambda: Beam(num_candidates=0), "decoding.num_candidates=0 must be an integer >= 1 or null"),
    (lambda: Beam(alpha=-0.5), "decoding.alpha=-0.5 must be >= 0"),
    (lambda: Beam(no_repeat_ngram_size=-1), "decoding.no_repeat_ngram_size=-1 must be an integer >= 0"),
])
def test_bad_parameters_raise_one_line_config_error(make, fragment):
    with pytest.raises(ConfigError) as e:
        make()
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_every_decoding_yaml_instantiates_and_validates_through_the_run_config():
    from conftest import compose_cfg
    from seqbench.errors import instantiate
    from seqbench.validate import group_options, validate

    assert {"greedy", "sample", "topk", "topp", "beam"} <= set(group_options("decoding"))
    for name in group_options("decoding"):
        cfg = compose_cfg([f"decoding={name}"])
        validate(cfg)
        assert instantiate(cfg.decoding).name == name
    with pytest.raises(ConfigError, match="decoding.beam_width=0"):
        validate(compose_cfg(["decoding=beam", "decoding.beam_width=0"]))
