"""Elman RNN from scratch (Elman 1990), torch's parameter layout."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from seqbench.cells import register_scratch
from seqbench.cells.scratch import (ScratchStack, all_grads, final_state,
                                    hidden_grad_step, input_projection, new_buffer, rows,
                                    start_hidden_grad, steps)
from seqbench.errors import choice_error

ACTIVATIONS = ("tanh", "relu")


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
        Ys, w_hh_t = Y.unbind(0), w_hh.t()
        for t in range(T):
            n = ns[t]
            a = rows(Ys, t, n, B)
            a.addmm_(h0[:n] if t == 0 else Ys[t - 1][:n], w_hh_t)
            a.relu_() if relu else a.tanh_()
            if n < B:
                Ys[t][n:].zero_()
        ctx.relu, ctx.ns = relu, ns
        ctx.save_for_backward(x, w_ih, w_hh, h0, Y)
        return Y, final_state(Y, last)

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT):
        x, w_ih, w_hh, h0, Y = ctx.saved_tensors
        ns, (T, B, H) = ctx.ns, Y.shape
        # act'(a_t) for all steps at once (only the active rows are read)
        deriv = Y.gt(0).to(Y.dtype) if ctx.relu else torch.addcmul(torch.ones_like(Y), Y, Y, value=-1)
        dA = new_buffer(Y, Y.shape, ns[-1] < B)
        dAs, dYs, derivs = dA.unbind(0), dY.unbind(0), deriv.unbind(0)
        dh = start_hidden_grad(dhT, dY, ns)
        for t in range(T - 1, -1, -1):
            n = ns[t]
            da = rows(dAs, t, n, B)
            torch.mul(dh[:n], derivs[t][:n], out=da)
            hidden_grad_step(dh, dYs, da, w_hh, t, ns)
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
