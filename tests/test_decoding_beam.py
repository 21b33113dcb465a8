"""Beam search against exhaustive search on tiny real recurrent LMs (states re-ordered per beam)."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqbench.decoding import Beam, Greedy, banned_by_ngrams
from test_decoding import FixedLM, tiny_lm

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = torch.tensor([[1, 2], [3, 0], [2, 2]])  # ids < 4: every vocabulary below fits


def token_log_probs(model, prompt, seqs):
    """log p(seq_t | prompt, seq_<t) (S, L) by one full forward pass over each row (the reference)."""
    x = torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    logp = torch.log_softmax(model(x)[0][:, prompt.shape[0] - 1:-1].double(), -1)
    return logp.gather(-1, seqs[..., None]).squeeze(-1)


def log_prob(model, prompt, seqs):
    return token_log_probs(model, prompt, seqs).sum(-1)


def all_hypotheses(vocab, length, eos=None):
    """Every sequence of ``length`` tokens, or (with EOS) every sequence that ends at its first
    EOS within ``length`` tokens or reaches ``length`` without one; EOS-padded to ``length``."""
    if eos is None:
        return [list(s) for s in itertools.product(range(vocab), repeat=length)]
    words = [t for t in range(vocab) if t != eos]
    out = []
    for n in range(length):
        out += [list(s) + [eos] * (length - n) for s in itertools.product(words, repeat=n)]
    return out + [list(s) for s in itertools.product(words, repeat=length)]


def exhaustive(model, prompt, vocab, length, eos=None, alpha=0.0):
    """Scores (sorted, best first) and sequences of every hypothesis: log p / |y|^alpha."""
    hyps = torch.tensor(all_hypotheses(vocab, length, eos))
    keep = torch.ones_like(hyps, dtype=torch.bool)
    if eos is not None:  # score up to the first EOS; the length counts the EOS
        is_eos = (hyps == eos).long()
        keep = (is_eos.cumsum(1) - is_eos) == 0
    logp = (token_log_probs(model, prompt, hyps) * keep).sum(-1)
    lengths = keep.sum(-1).double()
    scores = logp / lengths ** alpha
    order = scores.argsort(descending=True)
    return scores[order], hyps[order]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_full_width_beam_equals_exhaustive_search(cell):
    """beam_width = V^(L-1) keeps every prefix, so its beams are the exact top-b of all V^L
    sequences: any error in re-ordering the recurrent states per beam changes the scores."""
    V, L = 4, 3
    model = tiny_lm(cell, vocab=V, seed=1, sharpen=2.0)
    b = V ** (L - 1)
    result = Beam(beam_width=b, alpha=0.0).search(model, PROMPTS, L)
    for i, prompt in enumerate(PROMPTS):
        scores, seqs = exhaustive(model, prompt, V, L)
        assert torch.allclose(result.log_probs[i].double(), scores[:b], atol=1e-5)
        assert torch.equal(result.tokens[i, 0], seqs[0])
        # each returned score is the true log-probability of its returned sequence
        assert torch.allclose(log_prob(model, prompt, result.tokens[i]), result.log_probs[i].double(), atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_narrow_beam_finds_better_than_greedy_and_scores_are_true(cell):
    V, L = 5, 6
    model = tiny_lm(cell, vocab=V, seed=0, sharpen=2.0)
    greedy = Greedy().generate(model, PROMPTS, L)
    result = Beam(beam_width=3, alpha=0.0).search(model, PROMPTS, L)
    beam_lp = torch.stack([log_prob(model, p, result.tokens[i, :1]) for i, p in enumerate(PROMPTS)]).squeeze(1)
    greedy_lp = torch.stack([log_prob(model, p, greedy[i:i + 1]) for i, p in enumerate(PROMPTS)]).squeeze(1)
    assert (beam_lp >= greedy_lp - 1e-6).all()
    assert (beam_lp > greedy_lp + 1e-3).any()  # the search matters on this model
    for i, p in enumerate(PROMPTS):
        assert torch.allclose(log_prob(model, p, result.tokens[i]), result.log_probs[i].double(), atol=1e-5)
        assert (result.scores[i][:-1] >= result.scores[i][1:]).all()  # best first
    # a batch of prompts decodes like each prompt alone
    alone = torch.cat([Beam(beam_width=3, alpha=0.0).generate(model, p[None], L) for p in PROMPTS])
    assert torch.equal(alone, result.best)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_eos_beam_equals_exhaustive_search_with_length_normalisation(alpha):
    """Finished hypotheses of every length compete by log p / |y|^alpha; exact at full width."""
    V, L, eos = 4, 4, 3
    model = tiny_lm("lstm", vocab=V, seed=2, sharpen=2.0)
    with torch.no_grad():
        model.head.bias[eos] += 0.5  # EOS likely enough to end some hypotheses early
    b = (V - 1) ** (L - 1)
    result = Beam(beam_width=b, alpha=alpha).search(model, PROMPTS, L, eos_id=eos)
    ended_early = 0
    for i, prompt in enumerate(PROMPTS):
        scores, seqs = exhaustive(model, prompt, V, L, eos=eos, alpha=alpha)
        assert torch.allclose(result.scores[i].double(), scores[:b], atol=1e-5)
        assert torch.equal(result.tokens[i, 0], seqs[0])
        ended_early += int((result.lengths[i] < L).sum())
    assert ended_early > 0


def test_length_normalisation_changes_the_winner():
    """alpha = 0 prefers short hypotheses (fewer negative terms); alpha = 1 can prefer a longer one."""
    V, L, eos = 4, 4, 3
    model = tiny_lm("lstm", vocab=V, seed=2, sharpen=2.0)
    short = Beam(beam_width=27, alpha=0.0).search(model, PROMPTS, L, eos_id=eos)
    norm = Beam(beam_width=27, alpha=1.0).search(model, PROMPTS, L, eos_id=eos)
    assert (norm.lengths[:, 0] >= short.lengths[:, 0]).all()
    assert (norm.lengths[:, 0] > short.lengths[:, 0]).any()


def test_early_stop_when_every_beam_is_finished():
    model = FixedLM([0.0, 0.5, 0.0, 4.0])  # EOS (3) is by far the most likely token
    result = Beam(beam_width=2, alpha=0.0).search(model, torch.zeros(2, 3, dtype=torch.long), 50, eos_id=3)
    assert model.calls <= 3  # prompt + a step or two, not 50
    assert (result.tokens[:, 0] == 3).all() and (result.lengths[:, 0] == 1).all()
    assert torch.equal(Beam(beam_width=2).generate(model, torch.zeros(2, 3, dtype=torch.long), 50, eos_id=3),
                       result.best)


def test_beam_width_one_with_eos_is_greedy():
    V, eos = 5, 4
    model = tiny_lm("gru", vocab=V, seed=3, sharpen=3.0)
    with torch.no_grad():
        model.head.bias[eos] += 2.0
    greedy = Greedy().generate(model, PROMPTS, 12, eos_id=eos)
    assert (greedy == eos).any()
    assert torch.equal(Beam(beam_width=1, alpha=0.0).generate(model, PROMPTS, 12, eos_id=eos), greedy)


@pytest.mark.parametrize("size", [2, 3])
def test_no_repeat_ngram_outputs_have_no_repeated_ngram(size):
    V = 8
    model = tiny_lm("lstm", vocab=V, seed=0, sharpen=3.0)
    plain = Beam(beam_width=3).generate(model, PROMPTS, 25)

    def repeats(row):
        grams = [tuple(row[i:i + size]) for i in range(len(row) - size + 1)]
        return len(grams) - len(set(grams))

    assert any(repeats(r) for r in torch.cat([PROMPTS, plain], 1).tolist())  # the model does loop
    result = Beam(beam_width=3, no_repeat_ngram_size=size).search(model, PROMPTS, 25)
    for i in range(len(PROMPTS)):
        for hyp in result.tokens[i]:
            assert repeats(torch.cat([PROMPTS[i], hyp]).tolist()) == 0


def test_banned_by_ngrams_reference():
    seq = torch.tensor([[1, 2, 3, 1, 2], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    banned = banned_by_ngrams(seq, 3, 6)
    assert banned[0].nonzero().flatten().tolist() == [3]       # "1 2" was followed by 3
    assert banned[1].nonzero().flatten().tolist() == [0]
    assert not banned[2].any()
    assert banned_by_ngrams(seq, 1, 6)[2].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]


def test_num_candidates_restricts_the_expansion():
    """n = 1 candidate per beam: every beam extends only by its own argmax, so the best
    hypothesis cannot beat the full (n = beam_width) search."""
    V, L = 5, 6
    model = tiny_lm("lstm", vocab=V, seed=0, sharpen=2.0)
    one = Beam(beam_width=3, num_candidates=1, alpha=0.0).search(model, PROMPTS, L)
    full = Beam(beam_width=3, alpha=0.0).search(model, PROMPTS, L)
    assert (full.log_probs[:, 0] >= one.log_probs[:, 0] - 1e-6).all()
    # with one live beam at the start and one candidate each, beam search is greedy
    assert torch.equal(one.best, Greedy().generate(model, PROMPTS, L))
