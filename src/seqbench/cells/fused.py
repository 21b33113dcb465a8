"""Fused stacks: torch.nn.RNN / LSTM / GRU (oneDNN on CPU, cuDNN on GPU) behind RecurrentStack."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqbench.cells.base import RecurrentStack, State
from seqbench.errors import ConfigError

# torch.backends.mkldnn.flags() warns about an Intel-GPU feature on every CPU build
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


class FusedStack(RecurrentStack):
    """Wraps the torch module a registered cell class names as its ``fused_module`` (batch_first).

    ``cell`` is that class (or its registry name); the cell's options go to the torch module
    (``nonlinearity`` for ``nn.RNN``), except ``forget_bias``, which is applied after building
    when the cell ``uses_forget_bias``. Variable-length batches are packed
    (``pack_padded_sequence``), so each direction reads only a sequence's true tokens and the
    final state is taken at its true end.
    """

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        if isinstance(cell, str):
            from seqbench.cells import cell_class

            cell = cell_class(cell)
        if cell.fused_module is None:
            raise ConfigError(f"model.impl='fused' is not available for cell {cell.cell!r} (torch has no fused "
                              f"kernel); valid choices: auto, scratch")
        self.cell = cell.cell
        self.has_cell_state = cell.has_cell_state
        forget_bias = options.pop("forget_bias", None)
        self.rnn = cell.fused_module(
            input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0, batch_first=True, **options)
        if cell.uses_forget_bias:
            self._forget_rows = cell.gates.index("f")
            self.set_forget_bias(cell.forget_bias if forget_bias is None else forget_bias)

    @torch.no_grad()
    def set_forget_bias(self, value: float) -> None:
        """Forget-gate bias = value. torch splits the bias in b_ih + b_hh (gate order of the cell,
        (i, f, g, o) for the LSTM): put the whole value in b_ih and zero b_hh's forget slice."""
        H = self.hidden_size
        rows = slice(self._forget_rows * H, (self._forget_rows + 1) * H)
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias_ih"):
                p[rows].fill_(value)
            elif name.startswith("bias_hh"):
                p[rows].zero_()

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
