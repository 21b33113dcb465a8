"""The one interface every recurrent stack implements.

Shapes (batch-first, one layout for the whole code base):
    x       (B, T, I)               input sequence
    output  (B, T, D * H)           top layer's hidden states, D = 2 if bidirectional else 1
    state   (L * D, B, H)           for RNN / GRU
            ((L * D, B, H), (L * D, B, H)) = (h, c) for the LSTM family
``lengths`` (B,) marks the true end of each sequence in a padded batch; positions past it
produce zeros and do not change the final state.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

State = Union[Tensor, tuple[Tensor, Tensor]]


class RecurrentStack(nn.Module):
    """Base class: stacked (optionally bidirectional) recurrent layers of one cell kind."""

    #: registry name of the cell (``model=<name>`` picks it); set by subclasses.
    cell: str = ""
    #: True for the LSTM family, whose state is the pair (h, c).
    has_cell_state: bool = False

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def forward(self, x: Tensor, state: Optional[State] = None,
                lengths: Optional[Tensor] = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """Zeros of the state's shape."""
        shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        h = torch.zeros(shape, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.has_cell_state else h


def detach_state(state: Optional[State]) -> Optional[State]:
    """Cut the graph between truncated-BPTT windows, keep the values."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def select_state(state: State, index: Tensor) -> State:
    """Pick (and reorder/repeat) batch entries of a state: beam search re-ranking."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)
