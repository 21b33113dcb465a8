"""Elman RNN from scratch (Elman 1990), torch's parameter layout."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from seqbench.cells import register_scratch
from seqbench.cells.scratch import (ScratchStack, all_grads, final_state,
                                    hidden_grad_step, input_projection, new_buffer, rows,
                                    start_hidden_grad, steps)
from seqbench.errors import choice_error

ACTIVATIONS = ("tanh", "relu")


def activated_steps(Y: Tensor, h0: Tensor, ns: Sequence[int], relu: bool,
                    add_recurrent: Callable[[Tensor, Tensor], object]) -> None:
    """``h_t = act(a_t + r(h_{t-1}))`` step by step, in place of ``Y`` (holding a_t on entry);
    ``add_recurrent(a, h_prev)`` adds r(h_{t-1}) to the active rows ``a`` in place (Elman:
    ``W_hh h``, IndRNN: ``u * h``). Rows past a sequence's end stay zero."""
    T, B = Y.shape[:2]
    Ys = Y.unbind(0)
    for t in range(T):
        n = ns[t]
        a = rows(Ys, t, n, B)
        add_recurrent(a, h0[:n] if t == 0 else Ys[t - 1][:n])
        a.relu_() if relu else a.tanh_()
        if n < B:
            Ys[t][n:].zero_()


def activated_steps_backward(Y: Tensor, dY: Tensor, dhT: Tensor, ns: Sequence[int], relu: bool,
                             hidden_step: Callable[[Tensor, Sequence[Tensor], Tensor, int], None]
                             ) -> tuple[Tensor, Tensor]:
    """The reverse walk of :func:`activated_steps`: ``da_t = dh_t act'(a_t)`` with act' from h_t
    alone (tanh: 1 - h_t^2, relu: [h_t > 0], for all steps at once), then
    ``hidden_step(dh, dYs, da, t)`` turns dh into the gradient w.r.t. h_{t-1}. Returns
    ``(dA, dh0)``; the rows of dA past a sequence's end are zero."""
    T, B = Y.shape[:2]
    deriv = Y.gt(0).to(Y.dtype) if relu else torch.addcmul(torch.ones_like(Y), Y, Y, value=-1)
    dA = new_buffer(Y, Y.shape, ns[-1] < B)
    dAs, dYs, derivs = dA.unbind(0), dY.unbind(0), deriv.unbind(0)
    dh = start_hidden_grad(dhT, dY, ns)
    for t in range(T - 1, -1, -1):
        n = ns[t]
        da = torch.mul(dh[:n], derivs[t][:n], out=rows(dAs, t, n, B))
        hidden_step(dh, dYs, da, t)
    return dA, dh


class RNNRecurrence(torch.autograd.Function):
    """One direction of an Elman RNN with a hand-written BPTT.

    forward:  a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,   h_t = act(a_t)
    backward: da_t = (dy_t + W_hh^T da_{t+1}) * act'(a_t),   act' from h_t alone
              (tanh: 1 - h_t^2, relu: [h_t > 0]); the weight gradients are single matmuls
              over all steps (``dW_hh = sum_t da_t^T h_{t-1}``).
    """

    @staticmethod
    def forward(ctx, relu: bool, batch_sizes, last, x, w_ih, w_hh, b_ih, b_hh, h0):
        T, B, _ = x.shape
        ns = steps(T, B, batch_sizes)
        Y = input_projection(x, w_ih, b_ih + b_hh)           # a_t, activated in place -> h_t
        w_hh_t = w_hh.t()
        activated_steps(Y, h0, ns, relu, lambda a, h_prev: a.addmm_(h_prev, w_hh_t))
        ctx.relu, ctx.ns = relu, ns
        ctx.save_for_backward(x, w_ih, w_hh, h0, Y)
        return Y, final_state(Y, last)

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT):
        x, w_ih, w_hh, h0, Y = ctx.saved_tensors
        ns = ctx.ns
        dA, dh = activated_steps_backward(Y, dY, dhT, ns, ctx.relu,
                                          lambda g, dYs, da, t: hidden_grad_step(g, dYs, da, w_hh, t, ns))
        dx, dw_ih, dw_hh, db = all_grads(dA, x, w_ih, Y, h0, ctx.needs_input_grad[3])
        return None, None, None, dx, dw_ih, dw_hh, db, db, dh


@register_scratch("rnn")
class ScratchRNN(ScratchStack):
    """Elman RNN (Elman 1990)::

        h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act = tanh | relu

    Parameters as ``nn.RNN`` (one gate block).
    """

    gates = ("h",)
    fused_module = nn.RNN
    choices = {"nonlinearity": ACTIVATIONS}

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, nonlinearity: str = "tanh"):
        if nonlinearity not in ACTIVATIONS:
            raise choice_error("model.nonlinearity", nonlinearity, ACTIVATIONS)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)

    def cell_step(self, x_t, h, params):
        w_ih, w_hh, b_ih, b_hh = params
        a = x_t @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh
        h = torch.relu(a) if self.nonlinearity == "relu" else torch.tanh(a)
        return h, {"h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        y, h = RNNRecurrence.apply(self.nonlinearity == "relu", batch_sizes, last, x, *params, h0)
        return y, h, None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"
