"""Fused stacks: torch.nn.RNN / LSTM / GRU (oneDNN on CPU, cuDNN on GPU) behind RecurrentStack."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqbench.cells.base import RecurrentStack, State

# torch.backends.mkldnn.flags() warns about an Intel-GPU feature on every CPU build
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


class FusedStack(RecurrentStack):
    """Wraps one torch recurrent module (batch_first=True).

    Variable-length batches are packed (``pack_padded_sequence``), so each direction reads only
    a sequence's true tokens and the final state is taken at its true end.
    """

    _modules_by_cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, nonlinearity: str = "tanh",
                 forget_bias: Optional[float] = None):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.cell = cell
        self.has_cell_state = cell == "lstm"
        kwargs = dict(nonlinearity=nonlinearity) if cell == "rnn" else {}
        self.rnn = self._modules_by_cell[cell](
            input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0, batch_first=True, **kwargs)
        if cell == "lstm" and forget_bias is not None:
            self.set_forget_bias(forget_bias)

    @torch.no_grad()
    def set_forget_bias(self, value: float) -> None:
        """Forget-gate bias = value. torch splits the bias in b_ih + b_hh, gate order (i, f, g, o):
        put the whole value in b_ih and zero b_hh's forget slice."""
        H = self.hidden_size
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias_ih"):
                p[H:2 * H].fill_(value)
            elif name.startswith("bias_hh"):
                p[H:2 * H].zero_()

    def forward(self, x: Tensor, state: Optional[State] = None,
                lengths: Optional[Tensor] = None) -> tuple[Tensor, State]:
        if lengths is None:
            return self.rnn(x, state)
        T = x.shape[1]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        # CPU: on packed (variable-length) input oneDNN's RNN kernel is slower than ATen's
        # (torch 2.13, 2 cores: LSTM B=32 T<=270 fwd+bwd 149 vs 100 ms at 1 thread, 2-4x under
        # thread contention); use ATen's. Unpacked input keeps oneDNN, its fast case.
        with torch.backends.mkldnn.flags(enabled=x.device.type != "cpu"):
            out, state = self.rnn(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return out, state
