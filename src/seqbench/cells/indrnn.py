"""IndRNN (Li et al. 2018, "Independently Recurrent Neural Network (IndRNN): Building A Longer and
Deeper RNN", arXiv 1803.04831): each unit sees only its own previous state."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from seqbench.cells import register_scratch
from seqbench.cells.rnn import ACTIVATIONS, activated_steps, activated_steps_backward
from seqbench.cells.scratch import ScratchStack, final_state, input_projection, projection_grads, steps
from seqbench.errors import ConfigError, choice_error


def self_hidden_grad_step(dh: Tensor, dYs, da: Tensor, u: Tensor, t: int, ns) -> None:
    """``dh <- u * da_t + dy_{t-1}`` on the active rows: the gradient w.r.t. h_{t-1} through each
    unit's own recurrent weight (the elementwise counterpart of ``hidden_grad_step``)."""
    n = ns[t]
    if t == 0:                                               # every row is active at step 0
        torch.mul(da, u, out=dh[:n])
        return
    torch.addcmul(dYs[t - 1][:n], da, u, out=dh[:n])
    if ns[t - 1] > n:                                        # rows whose last step is t-1
        dh[n:ns[t - 1]] += dYs[t - 1][n:ns[t - 1]]


class IndRNNRecurrence(torch.autograd.Function):
    """One direction of an IndRNN with a hand-written BPTT (u: the recurrent weight vector).

    forward:  a_t = W_ih x_t + b_ih + u * h_{t-1},   h_t = act(a_t)
    backward: da_t = dh_t * act'(a_t)  (tanh: 1 - h_t^2, relu: [h_t > 0], from h_t alone)
              dh_{t-1} = dy_{t-1} + u * da_t,   du = sum_t da_t * h_{t-1}
              and W_ih, b_ih, x from all da_t at once (``projection_grads``).
    """

    @staticmethod
    def forward(ctx, relu: bool, batch_sizes, last, x, w_ih, b_ih, u, h0):
        T, B, _ = x.shape
        ns = steps(T, B, batch_sizes)
        Y = input_projection(x, w_ih, b_ih)                  # a_t, activated in place -> h_t
        activated_steps(Y, h0, ns, relu, lambda a, h_prev: a.addcmul_(h_prev, u))
        ctx.relu, ctx.ns = relu, ns
        ctx.save_for_backward(x, w_ih, u, h0, Y)
        return Y, final_state(Y, last)

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT):
        x, w_ih, u, h0, Y = ctx.saved_tensors
        ns = ctx.ns
        dA, dh = activated_steps_backward(Y, dY, dhT, ns, ctx.relu,
                                          lambda g, dYs, da, t: self_hidden_grad_step(g, dYs, da, u, t, ns))
        h_prev = torch.cat([h0.unsqueeze(0), Y[:-1]])        # padding rows of dA are zero
        du = (dA * h_prev).sum((0, 1))
        dx, dw_ih, db = projection_grads(dA, x, w_ih, ctx.needs_input_grad[3])
        return None, None, None, dx, dw_ih, db, du, dh


@register_scratch("indrnn")
class IndRNN(ScratchStack):
    """Independently recurrent network (Li et al. 2018): the recurrent weights are a vector u,
    one self-connection per unit, so units interact only across layers::

        h_t = act(W_ih x_t + b_ih + u * h_{t-1}),   act = relu (the paper's) | tanh
        |u| <= bound = magnitude ** (1 / time_steps)

    With relu, the gradient reaching h_{t-T} through a unit's recurrence is at most |u|^T (times
    the relu's 0/1 derivatives), so the bound caps its growth over ``time_steps`` steps at
    ``magnitude`` (the paper's gamma; its experiments use 2). ``time_steps: null``: no bound.

    The bound is applied in the forward: every step uses ``clamp(u, -bound, bound)``, so the
    module stays a pure function of its parameters (the gradient probe and torch.func call it so)
    and no hook into the optimizer is needed. The paper's code instead clips the stored u after
    each optimizer step; here an entry that steps past the bound acts as the bound and gets no
    gradient until weight decay brings it back.

    Parameters per layer and direction: ``weight_ih (H, in)``, ``bias_ih (H,)`` and ``weight_u
    (H,)``: H (in + 2). W_ih and b_ih start as torch's U(-1/sqrt(H), 1/sqrt(H)), u ~ U(0, 1)
    (within the bound). No ``weight_hh`` matrix: the recurrent init schemes refuse this cell.
    """

    gates = ("h",)
    choices = {"nonlinearity": ACTIVATIONS}

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, nonlinearity: str = "relu",
                 magnitude: float = 2.0, time_steps: Optional[int] = 100):
        if nonlinearity not in ACTIVATIONS:
            raise choice_error("model.nonlinearity", nonlinearity, ACTIVATIONS)
        if not (isinstance(magnitude, (int, float)) and not isinstance(magnitude, bool) and magnitude > 0):
            raise ConfigError(f"model.magnitude={magnitude} must be > 0 (the largest growth of a gradient "
                              f"over model.time_steps steps)")
        if time_steps is not None and (not isinstance(time_steps, int) or isinstance(time_steps, bool)
                                       or time_steps < 1):
            raise ConfigError(f"model.time_steps={time_steps} must be an integer >= 1, or null (no bound on u)")
        self.nonlinearity = nonlinearity
        self.magnitude, self.time_steps = float(magnitude), time_steps
        #: the largest |u| a step uses
        self.bound = math.inf if time_steps is None else self.magnitude ** (1.0 / int(time_steps))
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)

    def parameter_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        return {"weight_ih": (H, in_size), "bias_ih": (H,), "weight_u": (H,)}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("weight_u"):
                    nn.init.uniform_(p, 0.0, min(1.0, self.bound))

    def recurrent_weight(self, u: Tensor) -> Tensor:
        """u as the steps use it: clamped to [-bound, bound]."""
        return u if math.isinf(self.bound) else u.clamp(-self.bound, self.bound)

    def cell_step(self, x_t, h, params):
        w_ih, b_ih, u = params
        a = x_t @ w_ih.t() + b_ih + self.recurrent_weight(u) * h
        h = torch.relu(a) if self.nonlinearity == "relu" else torch.tanh(a)
        return h, {"h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        w_ih, b_ih, u = params
        y, h = IndRNNRecurrence.apply(self.nonlinearity == "relu", batch_sizes, last, x, w_ih, b_ih,
                                      self.recurrent_weight(u), h0)
        return y, h, None

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nonlinearity={self.nonlinearity!r}, magnitude={self.magnitude}, "
                                       f"time_steps={self.time_steps}")
