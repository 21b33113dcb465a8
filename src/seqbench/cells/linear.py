"""Linear RNN without biases, the textbook toy of exploding and vanishing gradients::

    s_t = W_x x_t + W_rec s_{t-1}

With one unit and one input it has two parameters, w_x and w_rec (the counting model of
Roelants' tutorial): s_T = w_x * sum_k w_rec^(T-k) x_k, so the count of ones is s_T at
w_x = w_rec = 1, and the gradient carries powers of w_rec up to T - 1:

    ds_T/dw_rec = w_x * sum_{k=1}^{T} (T - k) w_rec^(T-k-1) x_k

which explodes like w_rec^T for |w_rec| > 1 and vanishes for |w_rec| < 1 (tests check it).
``init_input`` / ``init_recurrent`` set every entry of W_x / the diagonal of W_rec to a value (the
seed's initial point 1.2, 1.2); null keeps torch's uniform init.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.cells import register_scratch
from seqbench.cells.scratch import ScratchStack


@register_scratch("linear")
class LinearRNN(ScratchStack):
    """s_t = W_x x_t + W_rec s_{t-1}: parameters ``weight_ih (H, in)`` and ``weight_hh (H, H)``."""

    gates = ("s",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, init_input: float | None = None, init_recurrent: float | None = None):
        self.init_input, self.init_recurrent = init_input, init_recurrent
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)

    def parameter_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        return {"weight_ih": (self.hidden_size, in_size), "weight_hh": (self.hidden_size, self.hidden_size)}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("weight_ih") and self.init_input is not None:
                    p.fill_(float(self.init_input))
                if name.startswith("weight_hh") and self.init_recurrent is not None:
                    p.copy_(float(self.init_recurrent) * torch.eye(self.hidden_size, dtype=p.dtype))

    def cell_step(self, x_t: Tensor, s: Tensor, params) -> tuple[Tensor, dict]:
        w_ih, w_hh = params
        s = x_t @ w_ih.t() + s @ w_hh.t()
        return s, {"s": s}
