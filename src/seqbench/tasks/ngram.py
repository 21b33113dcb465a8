"""Count-based n-gram language model (``task=ngram``): the floor any neural LM row must beat.

There is no gradient training. The one training step counts every n-gram of orders 1..N of the
whole training stream (the training split as the tokenizer encodes it, one pass; the run ends
after that epoch). Validation and test are the LM's (:mod:`seqbench.tasks.lm`): the same windows
of the same datamodule, the same sums over the whole held-out stream and the same metrics —
loss (nats/token), perplexity, bits/char = NLL / (ln 2 · characters), bits/byte — so a row of this
task and a ``task=lm`` row with the same data and tokenizer compare directly.

Smoothing, for the token w after a context h of up to N-1 tokens (h' = h without its first
token; V = the tokenizer's vocabulary size):

* ``kneser_ney``: interpolated Kneser–Ney (Chen & Goodman 1998, section 3.6; one absolute
  discount D_k per order k)::

      P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h •)  +  D_k · N1+(h •) / c_k(h •) · P_{k-1}(w | h')
      P_0(w)     = 1 / V

  c_N are the raw counts; a lower order k < N uses continuation counts c_k(h w) = N1+(• h w), the
  number of distinct tokens seen right before (h w). N1+(h •) = the number of distinct tokens
  seen after h; a context never seen (c_k(h •) = 0) passes P_{k-1} through unchanged.
  D_k = n1 / (n1 + 2 n2) from the order's counts of counts (Ney et al. 1994; 0.5 when no k-gram
  occurs once), unless ``task.discount`` fixes one D for every order.
* ``add_k``: additive smoothing of the highest-order counts, no back-off::

      P(w | h) = (c(h w) + k) / (c(h •) + k V)          (k = 1: Laplace)

Both sum to one over the V tokens for every context, unseen tokens included (``<unk>``, BPE
merges that never occur). The context is carried across the windows of an evaluation column as
the LM carries its state, and a column starts fresh as the LM's state does: its first targets
have shorter contexts and use order len(h) + 1.

The ``model``, ``embedding``, ``optimizer`` and ``scheduler`` groups are accepted and ignored:
there is no stack and there are no trainable parameters (``num_parameters`` reports the number of
stored counts, the model's size). Samples are generated through the ordinary decoding path:
:meth:`NgramLM.step` returns log-probabilities as logits, and its "state" is the last N-1 tokens.
Counting runs in one process (``trainer=cpu`` or ``trainer=gpu``; DDP is refused).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from seqbench.data.lm import CountingDataModule
from seqbench.errors import ConfigError, choice_error
from seqbench.tasks.base import Task
from seqbench.tasks.lm import SUMS, HeldOutEvaluation, eval_sums, lm_metrics

SMOOTHINGS = ("add_k", "kneser_ney")
#: an order's table: context h -> ({w: count used at this order}, c(h •), N1+(h •))
Table = dict[tuple, tuple[dict[int, int], int, int]]
_UNSEEN = ({}, 0, 0)


class NgramCounts:
    """Counts of every n-gram of orders 1..``order`` of a token stream, and the smoothed
    probabilities of the module docstring. Plain Python: counts are dicts keyed by token tuples."""

    def __init__(self, vocab_size: int, order: int, smoothing: str = "kneser_ney",
                 discount: float | None = None, k: float = 1.0):
        if smoothing not in SMOOTHINGS:
            raise choice_error("task.smoothing", smoothing, SMOOTHINGS)
        self.vocab_size, self.order, self.smoothing = int(vocab_size), int(order), smoothing
        self.fixed_discount, self.k = discount, float(k)
        #: raw[k]: k-gram (tuple of ids) -> its count in the training stream (raw[0] unused)
        self.raw: list[Counter] = [Counter() for _ in range(self.order + 1)]
        self.tables: list[Table] = [{} for _ in range(self.order + 1)]
        self.discounts: list[float] = [0.0] * (self.order + 1)
        self._dense: dict[tuple, Tensor] = {}   # context -> P(. | context), for decoding

    # -- counting --------------------------------------------------------------------------------
    def count(self, ids: Sequence[int]) -> None:
        """Count every k-gram of ``ids``, k = 1..order (replacing earlier counts)."""
        ids = list(ids)
        self.raw = [Counter(), *(Counter(zip(*(ids[j:] for j in range(k)))) for k in range(1, self.order + 1))]
        self.fit()

    def order_counts(self, k: int) -> Counter:
        """The counts order ``k`` is estimated from: raw, or for Kneser–Ney below the top order the
        continuation counts N1+(• g), one per distinct (k+1)-gram ending in g."""
        if self.smoothing == "kneser_ney" and k < self.order:
            return Counter(g[1:] for g in self.raw[k + 1])
        return self.raw[k]

    def fit(self) -> None:
        """Tables and discounts from the raw counts (after counting or loading a checkpoint)."""
        for k in range(1, self.order + 1):
            counts = self.order_counts(k)
            successors: dict[tuple, dict[int, int]] = {}
            for g, c in counts.items():
                successors.setdefault(g[:-1], {})[g[-1]] = c
            self.tables[k] = {h: (s, sum(s.values()), len(s)) for h, s in successors.items()}
            self.discounts[k] = self.discount(counts)
        self._dense.clear()

    def discount(self, counts: Counter) -> float:
        """D = n1 / (n1 + 2 n2) over the counts of counts (or ``task.discount``)."""
        if self.fixed_discount is not None:
            return float(self.fixed_discount)
        of = Counter(c for c in counts.values() if c <= 2)
        return of[1] / (of[1] + 2 * of[2]) if of[1] else 0.5

    def num_counts(self) -> int:
        """Distinct n-grams stored over all orders: the model's size."""
        return sum(len(c) for c in self.raw)

    # -- probabilities ---------------------------------------------------------------------------
    def context(self, history: Sequence[int]) -> tuple:
        """The last order-1 tokens of ``history`` (all of it when shorter)."""
        return tuple(history[max(len(history) - (self.order - 1), 0):])

    def prob(self, history: Sequence[int], w: int) -> float:
        """P(w | the last order-1 tokens of ``history``)."""
        h = self.context(history)
        V = self.vocab_size
        if self.smoothing == "add_k":
            succ, total, _ = self.tables[len(h) + 1].get(h, _UNSEEN)
            return (succ.get(w, 0) + self.k) / (total + self.k * V)
        p = 1.0 / V
        for j in range(len(h) + 1):  # order j + 1 conditions on the last j tokens
            succ, total, types = self.tables[j + 1].get(h[len(h) - j:], _UNSEEN)
            if total:
                D = self.discounts[j + 1]
                p = (max(succ.get(w, 0) - D, 0.0) + D * types * p) / total
        return p

    def distribution(self, history: Sequence[int]) -> Tensor:
        """P(. | the last order-1 tokens of ``history``) over the vocabulary: (V,) float64."""
        h = self.context(history)
        if h in self._dense:
            return self._dense[h]
        V = self.vocab_size

        def successors(j: int):
            succ, total, types = self.tables[j].get(h[len(h) - (j - 1):], _UNSEEN)
            return torch.tensor(list(succ), dtype=torch.long), \
                torch.tensor(list(succ.values()), dtype=torch.float64), total, types

        if self.smoothing == "add_k":
            ws, cs, total, _ = successors(len(h) + 1)
            p = torch.full((V,), self.k, dtype=torch.float64).index_add_(0, ws, cs) / (total + self.k * V)
        else:
            p = torch.full((V,), 1.0 / V, dtype=torch.float64)
            for j in range(1, len(h) + 2):
                ws, cs, total, types = successors(j)
                if total:
                    D = self.discounts[j]
                    p = (p * (D * types)).index_add_(0, ws, (cs - D).clamp_min(0)) / total
        if len(self._dense) > 100_000:
            self._dense.clear()
        self._dense[h] = p
        return p

    # -- checkpoint --------------------------------------------------------------------------------
    def state(self) -> dict:
        """Raw counts as tensors (loadable with ``weights_only=True``): per order k, the k-grams
        (M, k) and their counts (M,)."""
        out = {"order": self.order, "ngrams": [], "counts": []}
        for k in range(1, self.order + 1):
            grams = list(self.raw[k])
            out["ngrams"].append(torch.tensor(grams, dtype=torch.long).view(len(grams), k))
            out["counts"].append(torch.tensor([self.raw[k][g] for g in grams], dtype=torch.long))
        return out

    def load_state(self, state: dict) -> None:
        if int(state["order"]) != self.order:
            raise ValueError(f"checkpoint holds order-{state['order']} counts, the model is order {self.order}")
        self.raw = [Counter(), *(Counter(dict(zip(map(tuple, g.tolist()), c.tolist())))
                                  for g, c in zip(state["ngrams"], state["counts"]))]
        self.fit()


class NgramLM(HeldOutEvaluation, Task):
    """The n-gram LM as a task module (see the module docstring): counts in ``training_step``,
    held-out NLL in ``validation_step``/``test_step`` over the LM's windows, samples via ``step``.

    ``model``, ``embedding``, ``optimizer`` and ``scheduler`` (passed by ``run.build`` to every
    task) are accepted and ignored."""

    datamodule_class = CountingDataModule
    generates = True
    data_task = "lm"  # the LM corpora (data=synthetic, tinyshakespeare, ...)
    primary_metric = ("test/bits_per_char", "min")
    trained_by_gradient = False  # one counting pass: nothing converges, the model group is ignored

    @classmethod
    def protocol(cls, cfg: DictConfig, tuned: tuple[str, ...] = ()) -> list[str]:
        """Counts: no budget, model, embedding or optimizer."""
        from seqbench.protocol import samples

        t = cfg.task
        smoothing = f" (k {t.k})" if t.smoothing == "add_k" else f" (discount {t.discount or 'n1/(n1+2n2)'})"
        return [f"{t.order}-gram counts of the whole training split (one pass), {t.smoothing} smoothing{smoothing}, "
                f"tokenizer {cfg.tokenizer.name}; evaluated on task=lm's windows ({t.eval_batch_size} columns, "
                "context carried)", *(samples(cfg) if "generate" in t else [])]

    def __init__(self, vocab_size: int, order: int = 3, smoothing: str = "kneser_ney",
                 discount: float | None = None, k: float = 1.0, unk_id: int | None = None, **ignored):
        super().__init__()
        self.save_hyperparameters("vocab_size", "order", "smoothing", "discount", "k", "unk_id", logger=False)
        self.ngrams = NgramCounts(vocab_size, order, smoothing, discount, k)
        self._carry: dict[str, list[tuple]] = {}
        self._sums: dict[str, dict[str, float]] = {}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """The dataset is an LM corpus; order >= 1; a known smoothing with a valid discount or k;
        one process (the counts are not sharded, and DDP refuses a module with nothing to train)."""
        super().check_config(cfg)
        t = cfg.task
        order = t.get("order")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ConfigError(f"task.order={order!r} must be an integer >= 1 (1: unigram, 3: trigram, ...)")
        if t.get("smoothing") not in SMOOTHINGS:
            raise choice_error("task.smoothing", t.get("smoothing"), SMOOTHINGS)
        discount = t.get("discount")
        if discount is not None and not (isinstance(discount, (int, float)) and 0 < discount <= 1):
            raise ConfigError(f"task.discount={discount!r} must be in (0, 1], or null (estimated per order)")
        if not (isinstance(t.get("k"), (int, float)) and t.k > 0):
            raise ConfigError(f"task.k={t.get('k')!r} must be > 0 (add-k smoothing)")
        strategy, devices = str(cfg.trainer.get("strategy", "auto")), cfg.trainer.get("devices", 1)
        if "ddp" in strategy or str(devices) != "1" or int(cfg.trainer.get("num_nodes", 1)) != 1:
            raise ConfigError(f"task=ngram counts in one process, not trainer.strategy={strategy} with "
                              f"trainer.devices={devices}: use trainer=cpu or trainer=gpu")

    # -- training: one pass of counting --------------------------------------------------------
    def setup(self, stage: str) -> None:
        for note in (".*configure_optimizers` returned `None`.*", ".*`training_step` returned `None`.*"):
            warnings.filterwarnings("ignore", message=note)  # by design here: nothing to optimize

    def configure_optimizers(self):
        return None  # nothing to optimize

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """No gradients to clip (``trainer.gradient_clip_val`` does not apply)."""

    def training_step(self, batch, batch_idx):
        """batch ``{"ids": (1, N)}``: the whole training stream (``CountingDataModule``)."""
        self.ngrams.count(batch["ids"][0].tolist())
        self.trainer.should_stop = True  # the counts are final: validate once, then test
        return None

    def num_parameters(self) -> int:
        return self.ngrams.num_counts()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ngram_counts"] = self.ngrams.state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ngrams.load_state(checkpoint["ngram_counts"])

    # -- the LM interface: log-probabilities as logits ------------------------------------------
    def forward(self, tokens: Tensor, state: Tensor | None = None):
        """tokens (B, T) -> log P (B, T, V), state (order-1, B): each column's last order-1 tokens
        (-1: none yet; the layout ``select_state`` reorders for beam search)."""
        B, T = tokens.shape
        n = self.ngrams.order - 1
        before = [[] for _ in range(B)] if state is None else [[i for i in col if i >= 0] for col in state.T.tolist()]
        logp = torch.empty(B, T, self.ngrams.vocab_size, dtype=torch.float64)
        last = torch.full((n, B), -1, dtype=torch.long)
        for b, row in enumerate(tokens.tolist()):
            seq = before[b] + row
            for t in range(T):
                logp[b, t] = self.ngrams.distribution(seq[:len(before[b]) + t + 1]).log()
            tail = seq[max(len(seq) - n, 0):]
            if tail:
                last[n - len(tail):, b] = torch.tensor(tail)
        return logp.to(tokens.device, torch.float32), last.to(tokens.device)

    def step(self, tokens: Tensor, state: Tensor | None = None):
        return self(tokens, state)

    # -- evaluation: the LM's sums and metrics ---------------------------------------------------
    def _eval_start(self, stage: str) -> None:
        self._carry.pop(stage, None)
        self._sums[stage] = dict.fromkeys(SUMS, 0.0)

    def _eval_step(self, batch, stage: str) -> None:
        """NLL of every target of the window (B, T), each column's context carried from its
        previous window."""
        x, y = batch["x"].tolist(), batch["y"].tolist()
        carry = self._carry.get(stage) or [()] * len(x)
        nll = []
        for b, (xs, ys) in enumerate(zip(x, y)):
            seq = [*carry[b], *xs]
            start = len(carry[b])
            nll.append([-math.log(self.ngrams.prob(seq[:start + t + 1], w)) for t, w in enumerate(ys)])
            carry[b] = self.ngrams.context(seq)
        self._carry[stage] = carry
        for k, v in eval_sums(torch.tensor(nll, dtype=torch.float64), batch, self.hparams.unk_id).items():
            self._sums[stage][k] += float(v)

    def _eval_end(self, stage: str) -> None:
        totals = self._sums.pop(stage, None)
        if not totals or totals["tokens"] == 0:
            return
        for k, v in lm_metrics(totals).items():
            self.log(f"{stage}/{k}", v, prog_bar=k == "loss")

