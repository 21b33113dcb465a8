"""A small causal Transformer (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762):
the reference row that asks whether recurrence helps at all. Decoder-only, as GPT: pre-norm blocks
(``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")``; GPT-2), causal self-attention,
learned positional embeddings, a final LayerNorm. Over the window of inputs it attends to, s = 0..S-1::

    z_s = W_in x_s + b_in + P[s]                                    (P: context x H, learned)
    per layer:  z <- z + W_o Attn(LN_1(z))                          causal, NH heads of size d
                z <- z + W_2 GELU(W_1 LN_2(z) + b_1) + b_2          (W_1: F x H, F = ff_multiplier * H)
    y_s = LN_f(z_s)                                                 the stack's output at s

    Attn: [q | k | v] = W_qkv a + b_qkv,  head_j = softmax(q_j k_j^T / sqrt(d) + causal mask) v_j

**Its state is its context.** To sit behind the :class:`~seqbench.cells.base.RecurrentStack`
interface (truncated BPTT carries a state between windows; generation feeds one token at a time
with a state; beam search re-orders states along dim 1), the state is a bounded window of the
previous *inputs*, re-run with each call (nothing else is cached)::

    h  (L, B, H)   each layer's output at each sequence's last token; the top row is y there: what a
                   classifier reads (``top_layer_final``)
    c  (L, B, W)   the window: the last K = context - 1 inputs, one slot [x_s | 1] each (zeros: an
                   empty slot, as ``initial_state`` gives), K * (I + 1) numbers laid out over the L
                   rows, W = ceil(K (I + 1) / L)

A call on x (B, T, I) with T <= ``context`` is one pass over [the last context - T inputs of the
window; x], positions 0, 1, ... in that order (empty slots skipped); outputs are x's positions only.
A longer x runs as a pass over its first ``context`` tokens, then passes of P = context // 2 tokens
each seeing the context - P inputs before it (as calls of their own with the state carried would,
so every token sees at least context - P inputs back). So two windows with the state carried, or one
token at a time, give exactly what one long window gives while the whole stream fits in
``context``; past it the window slides and positions restart at its oldest input, as nanoGPT's
``generate`` crops to its block size. Generation costs a pass over <= context positions per token.

``lengths`` (padded batches): a row's inputs past its end are neither attended to nor stored, its
outputs there are zeros, and its h is taken at its own last token; each row sees what it would see
alone (a row of n <= context tokens: the window's last context - n inputs). h never enters a later
step (``output_feeds_back = False``): the memory is all in c. Bidirectional stacks are refused (the
model is causal; the last token already attends to the whole sequence). ``dropout``: on the
embedded window, the attention weights, inside the feed-forward and on each sub-layer's output (the
places ``nn.TransformerEncoderLayer`` puts it).

Heads: d = ceil(H / NH) (a head size independent of the width, as T5's d_kv), so every hidden_size
works with every ``num_heads`` and ``model.param_budget`` can try every size; when NH divides H the
block is exactly ``nn.TransformerEncoderLayer`` (checked in the tests). With A = NH d, parameters::

    (I + 1) H + context H + L [4H + 3A (H + 1) + (A + 1) H + (H + 1) F + (F + 1) H] + 2H
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.cells import register_scratch
from seqbench.cells.base import RecurrentStack, State
from seqbench.errors import ConfigError


class Block(nn.Module):
    """One pre-norm Transformer layer (``nn.TransformerEncoderLayer(norm_first=True)``'s equations)."""

    def __init__(self, hidden_size: int, num_heads: int, head_size: int, ff_size: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_size, self.p = num_heads, head_size, dropout
        width = num_heads * head_size                                   # A
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attn_in = nn.Linear(hidden_size, 3 * width)                # rows [q; k; v], head-major
        self.attn_out = nn.Linear(width, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.linear1 = nn.Linear(hidden_size, ff_size)
        self.linear2 = nn.Linear(ff_size, hidden_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor, allowed: Tensor) -> Tensor:
        """z (B, S, H), allowed (B, 1, S, S) bool: query s may attend to key r -> (B, S, H)."""
        B, S, _ = z.shape
        q, k, v = self.attn_in(self.norm1(z)).view(B, S, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.p if self.training else 0.0)
        z = z + self.drop(self.attn_out(a.transpose(1, 2).reshape(B, S, -1)))
        return z + self.drop(self.linear2(self.drop(F.gelu(self.linear1(self.norm2(z))))))


def _positive_int(key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"model.{key}={value} must be an integer >= 1")
    return value


@register_scratch("transformer")
class Transformer(RecurrentStack):
    """``model=transformer``: see the module docstring (equations, the state as the context, sizes)."""

    has_cell_state = True      # (h, c): c is the window of inputs
    output_feeds_back = False  # h_{t-1} is only read out; the next step reads the window

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, context: int = 128, num_heads: int = 4, ff_multiplier: int = 4):
        if bidirectional:
            raise ConfigError("model=transformer is causal (left to right): bidirectional=false; a classifier "
                              "reads its last token, which attends to the whole sequence")
        context, num_heads = _positive_int("context", context), _positive_int("num_heads", num_heads)
        ff_multiplier = _positive_int("ff_multiplier", ff_multiplier)
        super().__init__(input_size, hidden_size, num_layers, False, dropout)
        self.context, self.num_heads = context, num_heads
        self.head_size = math.ceil(hidden_size / num_heads)            # d
        self.ff_size = ff_multiplier * hidden_size                     # F
        self.embed = nn.Linear(input_size, hidden_size)                # W_in, b_in
        self.position = nn.Embedding(context, hidden_size)             # P
        nn.init.normal_(self.position.weight, std=0.02)                # GPT-2's init of P
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(Block(hidden_size, num_heads, self.head_size, self.ff_size, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)                          # LN_f

    @property
    def slots(self) -> int:
        """K: inputs the window keeps (a call has at least one token of its own)."""
        return self.context - 1

    @property
    def cell_state_size(self) -> int:
        return math.ceil(self.slots * (self.input_size + 1) / self.num_layers)

    # ------------------------------------------------------------ the window <-> c
    def unpack(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """c (L, B, W) -> inputs (B, K, I), valid (B, K) bool."""
        (L, B, W), K, I = c.shape, self.slots, self.input_size
        window = c.transpose(0, 1).reshape(B, L * W)[:, :K * (I + 1)].reshape(B, K, I + 1)
        valid = window[..., I] > 0.5
        return torch.where(valid.unsqueeze(-1), window[..., :I], 0.0), valid

    def pack(self, inputs: Tensor, valid: Tensor) -> Tensor:
        """inputs (B, K, I), valid (B, K) -> c (L, B, W)."""
        (B, K, I), L, W = inputs.shape, self.num_layers, self.cell_state_size
        flat = torch.cat([inputs, valid.unsqueeze(-1).to(inputs.dtype)], -1).reshape(B, K * (I + 1))
        return F.pad(flat, (0, L * W - flat.shape[1])).view(B, L, W).transpose(0, 1)

    # ------------------------------------------------------------ forward
    def forward(self, x: Tensor, state: Optional[State] = None,
                lengths: Optional[Tensor] = None) -> tuple[Tensor, State]:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        if state is None:
            state = self.initial_state(B, device=x.device, dtype=x.dtype)
        if not isinstance(state, tuple) or len(state) != 2:
            raise ValueError("expected state (h, c): model=transformer's state is a pair")
        h, c = state
        for s, width in ((h, H), (c, self.cell_state_size)):
            if s.shape != (L, B, width):
                raise ValueError(f"expected state of shape {(L, B, width)}, got {tuple(s.shape)}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to(x.device, torch.long)
            if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise ValueError(f"lengths must be a ({B},) tensor of values in [1, {T}]")
        inputs, valid = self.unpack(c)
        C, P = self.context, max(1, self.context // 2)
        counts = torch.full((B,), T, device=x.device) if lengths is None else lengths
        outputs, start = [], 0
        while start < T:                                  # pieces: the first C tokens, then P at a time
            n = min(C if start == 0 else P, T - start)
            live = (counts - start).clamp(0, n)           # (B,): this piece's tokens in each row
            seen = C - (live.clamp(min=1) if start == 0 else torch.full_like(live, P))   # (B,): window inputs seen
            y, h, inputs, valid = self._pass(x[:, start:start + n], h, inputs, valid, live, seen)
            outputs.append(y)
            start += n
        return torch.cat(outputs, 1), (h, self.pack(inputs, valid))

    def _pass(self, x: Tensor, h: Tensor, inputs: Tensor, valid: Tensor, live: Tensor, seen: Tensor):
        """One pass over [the window's last ``seen`` inputs; x (B, n, I)], ``live`` (B,): how many of
        x's tokens each row has. -> y (B, n, H), h, the new window (inputs, valid)."""
        B, n, _ = x.shape
        K = self.slots
        keep = min(K, int(seen.max()))                                # window slots in the pass
        x_valid = torch.arange(n, device=x.device).expand(B, n) < live.unsqueeze(1)       # (B, n)
        x = torch.where(x_valid.unsqueeze(-1), x, 0.0)                # nothing past a row's end enters
        seen_slots = torch.arange(keep, 0, -1, device=x.device).expand(B, keep) <= seen.unsqueeze(1)
        window_valid = valid[:, K - keep:] & seen_slots               # (B, keep)
        # leading slots that no row attends to (empty, as a fresh state's) leave the pass: they take
        # no position and no query reads them, so the pass costs what the real context needs
        used = window_valid.any(0)                                    # (keep,): a slot some row attends to
        keep -= int(used.long().argmax()) if used.any() else keep     # argmax: the first used slot
        window_valid = window_valid[:, window_valid.shape[1] - keep:]
        seq = torch.cat([inputs[:, K - keep:], x], 1)                 # (B, S, I), S = keep + n
        seq_valid = torch.cat([window_valid, x_valid], 1)
        S = keep + n
        positions = (seq_valid.long().cumsum(1) - 1).clamp(min=0)    # empty slots take no position
        causal = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
        allowed = (causal & seq_valid.unsqueeze(1)) | torch.eye(S, dtype=torch.bool, device=x.device)
        z = self.drop(self.embed(seq) + self.position(positions))
        rows = []
        for layer in self.layers:
            z = layer(z, allowed.unsqueeze(1))
            rows.append(z)
        out = self.norm(z)
        rows[-1] = out
        y = torch.where(x_valid.unsqueeze(-1), out[:, keep:], 0.0)

        last = (keep + live - 1).clamp(min=0)                         # each row's last token in this pass
        batch = torch.arange(B, device=x.device)
        h_new = torch.stack([r[batch, last] for r in rows])           # (L, B, H)
        h = torch.where((live > 0).view(1, B, 1), h_new, h)           # a row already ended keeps its h

        # the new window: the K entries of [window; x] that end at each row's last token
        index = live.unsqueeze(1) + torch.arange(K, device=x.device)   # (B, K): [live, live + K)
        inputs = torch.cat([inputs, x], 1).gather(1, index.unsqueeze(-1).expand(B, K, self.input_size))
        valid = torch.cat([valid, x_valid], 1).gather(1, index)
        return y, h, inputs, valid

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, context={self.context}, "
                f"num_heads={self.num_heads}, head_size={self.head_size}, ff_size={self.ff_size}, "
                f"dropout={self.dropout}")
