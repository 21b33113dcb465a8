"""Decoding strategies: turn a language model's next-token distribution into text.

Every strategy works on a batch of prompts ``(B, P)`` at once through the model's incremental
interface ``logits (B, T, V), state = model.step(tokens (B, T), state)``: the prompt is read once,
then one token per step is fed with the carried recurrent state, so a prefix is never re-run.
Randomness comes only from the ``torch.Generator`` passed in: same seed, same text.

=========  ==================================================================================
greedy     y_t = argmax_v p(v | y_<t)
sample     y_t ~ softmax(z_t / T)                               (ancestral sampling)
topk       y_t ~ softmax(z_t / T) restricted to the k most likely tokens (Fan et al. 2018);
           k = 1 is greedy ("greedy sampling" of the seeds for small k)
topp       y_t ~ softmax(z_t / T) restricted to the nucleus: the smallest set of most likely
           tokens whose probability reaches p (Holtzman et al. 2020)
beam       keeps the ``beam_width`` best partial hypotheses by log p(y_1..t | prompt), each
           extended by its ``num_candidates`` most likely tokens per step; finished (EOS)
           hypotheses ranked by the length-normalised score  log p(y) / |y|^alpha
=========  ==================================================================================

Each strategy is one dataclass here + one YAML file in ``conf/decoding/``; parameters are checked
in ``__post_init__`` (a ``ConfigError`` naming the bad value and the valid range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqbench.cells import select_state
from seqbench.errors import ConfigError


def _check_int(name: str, value, minimum: int, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"decoding.{name}={value} must be an integer >= {minimum}{extra}")


def _check_prompt(prompt: Tensor, max_new_tokens: int) -> None:
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ConfigError(f"prompt of shape {tuple(prompt.shape)} must be (batch, length >= 1): "
                          f"give a non-empty prompt")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 0")


@dataclass
class DecodingStrategy:
    """Base: subclasses choose the next token from logits (B, V); ``generate`` runs the loop."""

    name: str = "base"

    def next_token(self, logits: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, model, prompt: Tensor, max_new_tokens: int,
                 generator: Optional[torch.Generator] = None, eos_id: Optional[int] = None) -> Tensor:
        """prompt (B, P) -> new tokens (B, max_new_tokens); after ``eos_id`` a row repeats it.

        Stops early once every row has emitted ``eos_id`` (the rest is filled with it)."""
        _check_prompt(prompt, max_new_tokens)
        B = prompt.shape[0]
        out = torch.full((B, max_new_tokens), eos_id if eos_id is not None else 0,
                         dtype=torch.long, device=prompt.device)
        if max_new_tokens == 0:
            return out
        logits, state = model.step(prompt, None)
        done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
        for t in range(max_new_tokens):
            token = self.next_token(logits[:, -1].float(), generator)
            if eos_id is not None:
                token = torch.where(done, torch.full_like(token, eos_id), token)
                done |= token == eos_id
            out[:, t] = token
            if t + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
                break
            logits, state = model.step(token[:, None], state)
        return out


@dataclass
class Greedy(DecodingStrategy):
    """y_t = argmax_v p(v | y_<t)."""

    name: str = "greedy"

    def next_token(self, logits, generator):
        return logits.argmax(dim=-1)


@dataclass
class Sample(DecodingStrategy):
    """y_t ~ softmax(filter(logits / temperature)); temperature -> 0 approaches greedy.

    Subclasses restrict the support with :meth:`filter_logits` (tokens outside it get -inf)."""

    name: str = "sample"
    temperature: float = 1.0

    def __post_init__(self):
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0:
            raise ConfigError(f"decoding.temperature={self.temperature} must be > 0 "
                              f"(use decoding=greedy for the argmax limit)")

    def filter_logits(self, logits: Tensor) -> Tensor:
        return logits

    def next_token(self, logits, generator):
        probs = torch.softmax(self.filter_logits(logits / self.temperature), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@dataclass
class TopK(Sample):
    """Sample among the k most likely tokens: p'(v) ∝ p(v)^(1/T) if v in top-k(p) else 0.

    Exactly k tokens are kept (``torch.topk`` breaks ties); k >= vocabulary size is plain sampling.
    """

    name: str = "topk"
    k: int = 10

    def __post_init__(self):
        super().__post_init__()
        _check_int("k", self.k, 1, " (1 = greedy)")

    def filter_logits(self, logits):
        k = min(self.k, logits.shape[-1])
        top = logits.topk(k, dim=-1)
        return torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)


@dataclass
class TopP(Sample):
    """Nucleus sampling: sort q = softmax(logits / T) in decreasing order and keep token i iff the
    mass before it, sum_{j<i} q_j, is < p (the smallest prefix reaching p; the most likely token
    is always kept). Temperature is applied first, as in Holtzman et al. and HF transformers.
    p = 1 is plain sampling."""

    name: str = "topp"
    p: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0 < self.p <= 1:
            raise ConfigError(f"decoding.p={self.p} must be in (0, 1] (1 = plain sampling)")

    def filter_logits(self, logits):
        if self.p >= 1:
            return logits
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= self.p, float("-inf"))
        return torch.empty_like(logits).scatter(-1, order, sorted_logits)


@dataclass
class BeamResult:
    """All hypotheses of a beam search, best first per prompt.

    tokens (B, beam, N) padded with EOS (or 0 without EOS) after a hypothesis' end;
    scores (B, beam) = log_probs / lengths^alpha (the ranking); log_probs (B, beam) = log p(y | prompt);
    lengths (B, beam) = generated tokens, EOS included. Unused slots score -inf.
    """

    tokens: Tensor
    scores: Tensor
    log_probs: Tensor
    lengths: Tensor

    @property
    def best(self) -> Tensor:
        return self.tokens[:, 0]


def banned_by_ngrams(seq: Tensor, size: int, vocab_size: int) -> Tensor:
    """(R, L) token rows -> (R, V) bool: tokens that would complete an n-gram (n = ``size``)
    already present in the row, i.e. v such that (seq[-(n-1):], v) occurs in seq."""
    R, L = seq.shape
    banned = torch.zeros(R, vocab_size, dtype=torch.bool, device=seq.device)
    if L < size:
        return banned
    windows = seq.unfold(1, size, 1)                       # (R, L - n + 1, n)
    suffix = seq[:, L - size + 1:]                          # (R, n - 1)
    match = (windows[:, :, :-1] == suffix[:, None, :]).all(-1)  # (R, W)
    hits = torch.zeros(R, vocab_size, device=seq.device).scatter_add_(1, windows[:, :, -1], match.float())
    return hits > 0


@dataclass
class Beam(DecodingStrategy):
    """Beam search over B prompts × ``beam_width`` beams in one batch of B·beam rows.

    Step t: every live beam j (cumulative log-prob s_j) proposes its ``num_candidates`` best
    tokens v by s_j + log p(v | beam j); the ``beam_width`` best of those candidates per prompt
    become the new beams, and the recurrent states are re-ordered to their parents
    (``select_state``) — no prefix is re-run.

    EOS: a candidate ending in EOS leaves the beam and becomes a finished hypothesis, ranked by
    the length-normalised score  score(y) = log p(y | prompt) / |y|^alpha  (|y| counts the
    generated tokens, EOS included; alpha = 0: raw log-prob, alpha = 1: mean log-prob per token;
    the simple power form of Murray & Chiang 2018 / fairseq's lenpen, not GNMT's ((5+|y|)/6)^alpha).
    The best ``beam_width`` finished hypotheses are kept. A prompt is done, and stops proposing
    hypotheses, once it has ``beam_width`` finished ones that no live beam can beat: log-probs
    only decrease and alpha >= 0, so a live beam's best reachable score is s_j / N^alpha
    (N = max_new_tokens) — an exact bound, the search stops early when all prompts are done.
    At the length limit the live beams join the finished ones with their normalised scores.

    ``no_repeat_ngram_size`` = n > 0 forbids any token that would repeat an n-gram of the
    sequence (prompt included).
    """

    name: str = "beam"
    beam_width: int = 5
    num_candidates: Optional[int] = None   # per beam per step; None = beam_width (exact top-b)
    alpha: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        _check_int("beam_width", self.beam_width, 1)
        if self.num_candidates is not None:
            _check_int("num_candidates", self.num_candidates, 1, " or null (= beam_width)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha >= 0:
            raise ConfigError(f"decoding.alpha={self.alpha} must be >= 0 "
                              f"(0 = no length normalisation, 1 = mean log-prob per token)")
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, " (0 = off)")

    @torch.no_grad()
    def generate(self, model, prompt, max_new_tokens, generator=None, eos_id=None):
        """prompt (B, P) -> best hypothesis per prompt (B, max_new_tokens), EOS-padded."""
        return self.search(model, prompt, max_new_tokens, eos_id).best

    @torch.no_grad()
    def search(self, model, prompt: Tensor, max_new_tokens: int, eos_id: Optional[int] = None) -> BeamResult:
        _check_prompt(prompt, max_new_tokens)
        B, device, N, b = prompt.shape[0], prompt.device, max_new_tokens, self.beam_width
        pad = eos_id if eos_id is not None else 0
        neg_inf = float("-inf")
        logits, state = model.step(prompt, None)
        V = logits.shape[-1]
        n = min(self.num_candidates or b, V)
        rows = torch.arange(B, device=device).repeat_interleave(b)            # prompt of each row
        state = select_state(state, rows)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1).index_select(0, rows)  # (B*b, V)
        seq = prompt.index_select(0, rows) if self.no_repeat_ngram_size else None
        tokens = torch.empty(B, b, 0, dtype=torch.long, device=device)       # live beams so far
        cum = torch.full((B, b), neg_inf, device=device)
        cum[:, 0] = 0.0                      # one live beam at first: the others would duplicate it
        fin = BeamResult(torch.full((B, b, N), pad, dtype=torch.long, device=device),
                         torch.full((B, b), neg_inf, device=device),
                         torch.full((B, b), neg_inf, device=device),
                         torch.zeros(B, b, dtype=torch.long, device=device))
        done = torch.zeros(B, dtype=torch.bool, device=device)
        offsets = (torch.arange(B, device=device) * b)[:, None]
        for t in range(N):
            if seq is not None:
                logp = logp.masked_fill(banned_by_ngrams(seq, self.no_repeat_ngram_size, V), neg_inf)
            total = cum[..., None] + logp.view(B, b, V)                      # (B, b, V)
            if eos_id is not None:
                eos = total[..., eos_id]
                in_top = eos >= total.topk(n, dim=-1).values[..., -1]   # EOS among the n candidates
                ok = in_top & torch.isfinite(eos) & ~done[:, None]
                ended = torch.cat([tokens, torch.full((B, b, 1), eos_id, device=device, dtype=torch.long)], -1)
                self._merge(fin, ended, torch.where(ok, eos, torch.full_like(eos, neg_inf)), t + 1, N, pad)
                total[..., eos_id] = neg_inf
            values, index = total.topk(n, dim=-1)                            # (B, b, n)
            cum, pos = values.view(B, b * n).topk(b, dim=-1)                 # (B, b)
            parent = pos // n
            token = index.view(B, b * n).gather(1, pos)
            tokens = torch.cat([tokens.gather(1, parent[..., None].expand(-1, -1, t)), token[..., None]], -1)
            if eos_id is not None:
                bound = cum.max(dim=-1).values / N ** self.alpha           # best reachable live score
                done |= fin.scores.min(dim=-1).values >= bound
                if bool(done.all()):
                    break
            if t + 1 == N:
                break
            flat = (offsets + parent).view(-1)
            state = select_state(state, flat)
            if seq is not None:
                seq = torch.cat([seq.index_select(0, flat), token.view(-1, 1)], 1)
            logits, state = model.step(token.view(-1, 1), state)
            logp = F.log_softmax(logits[:, -1].float(), dim=-1)
        if N > 0:  # the length limit: live beams of unfinished prompts become hypotheses
            live = torch.where(done[:, None], torch.full_like(cum, neg_inf), cum)
            self._merge(fin, tokens, live, tokens.shape[-1], N, pad)
        return fin

    def _merge(self, fin: BeamResult, tokens: Tensor, log_probs: Tensor, length: int, N: int, pad: int) -> None:
        """Keep the ``beam_width`` best of the finished hypotheses and the new ones (B, b, length)."""
        B, b = log_probs.shape
        new_tokens = F.pad(tokens, (0, N - tokens.shape[-1]), value=pad)
        scores = torch.cat([fin.scores, log_probs / length ** self.alpha], 1)
        fin.scores, top = scores.topk(b, dim=-1)
        fin.tokens = torch.cat([fin.tokens, new_tokens], 1).gather(1, top[..., None].expand(-1, -1, N))
        fin.log_probs = torch.cat([fin.log_probs, log_probs], 1).gather(1, top)
        fin.lengths = torch.cat([fin.lengths, torch.full_like(fin.lengths, length)], 1).gather(1, top)
