"""The LSTM family from scratch: LSTM, peephole LSTM, coupled input-forget gate (CIFG).

Notation (per layer and direction; sigma = logistic sigmoid, * = elementwise product)::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          pre-activations, one block per gate
    c_t = f * c_{t-1} + i * c~,    h_t = o * tanh(c_t)

Each fast path is a ``torch.autograd.Function``: the forward (no autograd) keeps the gate
activations; the backward first computes, for all steps at once, every factor of the gate
gradients that does not depend on the incoming gradient (e.g. ``i(1-i) c~``), then walks the steps
in reverse with only the products by ``dh``/``dc`` and one matmul per step, and takes the weight
gradients as single matmuls over all steps. Few kernels per step matter on a CPU: at the benchmark
sizes a step's elementwise work is tens of microseconds, the same order as launching a kernel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from seqbench.cells import register_scratch
from seqbench.cells.scratch import (ForgetBiasMixin, ScratchStack, all_grads, final_state,
                                    hidden_grad_step, input_projection, new_buffer, padding_mask,
                                    rows, start_hidden_grad, steps)


def doubled_rows(w: torch.Tensor, rows_: slice) -> torch.Tensor:
    """A copy of ``w`` with ``w[rows_]`` doubled: the c~ block's pre-activations become 2 a_g, so
    that one sigmoid over all gates gives sigma(2 a_g), and c~ = tanh(a_g) = 2 sigma(2 a_g) - 1."""
    w = w.clone()
    w[rows_] *= 2
    return w


#: dL/dy * y (1 - y) and dL/dy * (1 - y^2) from the activations y, each one kernel with an ``out``:
#: the all-steps factors of the backward below are single passes over (T, B, H) arrays.
sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input
tanh_backward = torch.ops.aten.tanh_backward.grad_input


def sum_times_previous_cell(P: torch.Tensor, C: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """``sum_t sum_b P_t[k] * c_{t-1}`` over steps and rows for each block k of ``P (T, B, K, H)``:
    the gradients of the peephole weights on c_{t-1}, all blocks in one pass. Returns (K, H)."""
    return (P[0] * c0.unsqueeze(1)).sum(0) + (P[1:] * C[:-1].unsqueeze(2)).sum((0, 1))


def cell_state_walk(dG: torch.Tensor, cell_gates: int, P_o: torch.Tensor, Q: torch.Tensor, R: torch.Tensor,
                    dY: torch.Tensor, dhT: torch.Tensor, dcT: torch.Tensor, w_hh: torch.Tensor,
                    ns: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reverse walk over the steps of an LSTM-type recurrence, given its per-step factors.

    ``dG`` holds, per step, the factors of the ``cell_gates`` gate blocks whose gradient is a
    multiple of dc (LSTM: i, f, g; CIFG: f, g) followed by ``P_o`` (a view of its o block);
    they become the pre-activation gradients in place. A step (dh: w.r.t. h_t, dc: w.r.t. c_t)::

        da_o = P_o dh,   dc += Q dh,   da_k = P_k dc (each cell gate k),   dc_{t-1} = R dc,
        dh_{t-1} = dy_{t-1} + da W_hh

    Returns the gradients w.r.t. the initial state (h0, c0)."""
    T, B, _ = dG.shape
    H = Q.shape[2]
    dGs, dcell, dO = dG.unbind(0), dG[..., :cell_gates * H].unbind(0), P_o.unbind(0)
    Rs, Qs, dYs = R.unbind(0), Q.unbind(0), dY.unbind(0)
    dh, dc = start_hidden_grad(dhT, dY, ns), dcT.clone()
    for t in range(T - 1, -1, -1):
        n = ns[t]
        dh_, dc_ = dh[:n], dc[:n]
        rows(dO, t, n, B).mul_(dh_)                                          # da_o = P_o dh
        dc_.addcmul_(rows(Qs, t, n, B), dh_)                                 # dc += Q dh
        rows(dcell, t, n, B).view(n, cell_gates, H).mul_(dc_.unsqueeze(1))   # da_k = P_k dc
        dc_.mul_(rows(Rs, t, n, B))                                          # dc_{t-1} = R dc
        hidden_grad_step(dh, dYs, rows(dGs, t, n, B), w_hh, t, ns)
    return dh, dc


class LSTMRecurrence(torch.autograd.Function):
    """One direction of an LSTM (gate order i, f, g=c~, o), optionally with peepholes.

    forward::

        i = sigma(a_i + p_i * c_{t-1}),  f = sigma(a_f + p_f * c_{t-1}),  c~ = tanh(a_g)
        c_t = f * c_{t-1} + i * c~,      o = sigma(a_o + p_o * c_t),       h_t = o * tanh(c_t)

    backward (dh: gradient w.r.t. h_t, dc: w.r.t. c_t from step t+1)::

        da_o = dh * tanh(c_t) * o(1-o)
        dc  += dh * o * (1 - tanh(c_t)^2) + p_o * da_o
        da_i = dc * c~ * i(1-i),   da_f = dc * c_{t-1} * f(1-f),   da_g = dc * i * (1-c~^2)
        dc_{t-1} = dc * f + p_i * da_i + p_f * da_f,    dh_{t-1} = dy_{t-1} + W_hh^T da

    Every factor of dh and dc above depends on the forward values only, so it is computed for all
    steps at once: P_o = tanh(c_t) o(1-o), Q = o (1 - tanh(c_t)^2) + p_o P_o, P_i = c~ i(1-i),
    P_f = c_{t-1} f(1-f), P_g = i (1-c~^2), R = f + p_i P_i + p_f P_f. A step is then
    da_o = P_o dh,  dc += Q dh,  (da_i, da_f, da_g) = (P_i, P_f, P_g) dc,  dc_{t-1} = R dc,
    and one matmul: the peephole cell costs the same per step as the plain one.

    c~ is computed as 2 sigma(2 a_g) - 1 (= tanh(a_g)), with the c~ rows of the weights and bias
    doubled, so that one sigmoid over the whole row activates all gates of a step.
    """

    @staticmethod
    def forward(ctx, peephole: bool, batch_sizes, last, x, w_ih, w_hh, b_ih, b_hh, h0, c0, *peep):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        ns = steps(T, B, batch_sizes)
        padded = ns[-1] < B
        # c~ = 2 sigma(2 a_g) - 1: one sigmoid activates every gate of a step (the strided tanh
        # of the c~ block alone costs 3x a contiguous pass with 2 threads), then one add fixes c~
        g_rows = slice(2 * H, 3 * H)
        G = input_projection(x, doubled_rows(w_ih, g_rows), doubled_rows(b_ih + b_hh, g_rows))
        Y, C, TC = (new_buffer(G, (T, B, H), padded) for _ in range(3))
        Gs = G.unbind(0)
        I, Fg, Cg, O = (G[..., k * H:(k + 1) * H].unbind(0) for k in range(4))
        Ys, Cs, TCs = Y.unbind(0), C.unbind(0), TC.unbind(0)
        w_hh_t = doubled_rows(w_hh, g_rows).t()
        minus_one = G.new_full((), -1.0)
        if peephole:                                         # views of the i, f (and c~) blocks
            IF, IFG = G[..., :2 * H].unbind(0), G[..., :3 * H].unbind(0)
            p_if, p_o = torch.stack(peep[:2]), peep[2]       # (2, H), (H,)
        for t in range(T):
            n = ns[t]
            h_prev = h0[:n] if t == 0 else Ys[t - 1][:n]
            c_prev = c0[:n] if t == 0 else Cs[t - 1][:n]
            rows(Gs, t, n, B).addmm_(h_prev, w_hh_t)
            if peephole:                                     # o waits for c_t
                rows(IF, t, n, B).view(n, 2, H).addcmul_(c_prev.unsqueeze(1), p_if)
                rows(IFG, t, n, B).sigmoid_()
            else:
                rows(Gs, t, n, B).sigmoid_()
            g = rows(Cg, t, n, B)
            torch.add(minus_one, g, alpha=2, out=g)          # c~ = 2 sigma(2 a_g) - 1
            c = torch.mul(rows(Fg, t, n, B), c_prev, out=rows(Cs, t, n, B))
            c.addcmul_(rows(I, t, n, B), g)
            o = rows(O, t, n, B)
            if peephole:
                o.addcmul_(c, p_o).sigmoid_()
            torch.mul(o, torch.tanh(c, out=rows(TCs, t, n, B)), out=rows(Ys, t, n, B))
        ctx.peephole, ctx.ns = peephole, ns
        ctx.save_for_backward(x, w_ih, w_hh, h0, c0, G, Y, C, TC, *peep)
        return Y, final_state(Y, last), final_state(C, last)

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT, dcT):
        x, w_ih, w_hh, h0, c0, G, Y, C, TC, *peep = ctx.saved_tensors
        peephole, ns = ctx.peephole, ctx.ns
        T, B, H = Y.shape
        # every factor that does not depend on dh, dc: computed for all steps at once, into dG
        dG, Q = torch.empty_like(G), torch.empty_like(Y)
        i, f, g, o = G.split(H, 2)
        P_i, P_f, P_g, P_o = dG.split(H, 2)
        sigmoid_backward(g, i, grad_input=P_i)               # c~ i(1-i)
        sigmoid_backward(c0, f[0], grad_input=P_f[0])         # c_{t-1} f(1-f)
        sigmoid_backward(C[:-1], f[1:], grad_input=P_f[1:])
        tanh_backward(i, g, grad_input=P_g)                  # i (1-c~^2)
        sigmoid_backward(TC, o, grad_input=P_o)              # tanh(c_t) o(1-o)
        tanh_backward(o, TC, grad_input=Q)                   # o (1 - tanh(c_t)^2)
        R = f                                                # dc_{t-1} = R * dc_t
        if peephole:                                         # the peepholes' paths to c, folded in:
            p_i, p_f, p_o = peep
            Q.addcmul_(P_o, p_o)                             # dc += dh (o(1-tanh^2) + p_o P_o)
            R = torch.addcmul(f, P_i, p_i).addcmul_(P_f, p_f)    # R = f + p_i P_i + p_f P_f
        mask = padding_mask(x, ns if ns[-1] < B else None)
        if mask is not None:                                 # rows past a sequence's end: zero
            dG.mul_(mask)
        dh, dc = cell_state_walk(dG, 3, P_o, Q, R, dY, dhT, dcT, w_hh, ns)
        dx, dw_ih, dw_hh, db = all_grads(dG, x, w_ih, Y, h0, ctx.needs_input_grad[3])
        dpeep = ()
        if peephole:                                         # sum_t da * c_{t-1} (i, f), da_o * c_t
            dp_i, dp_f = sum_times_previous_cell(dG[..., :2 * H].unflatten(2, (2, H)), C, c0)
            dpeep = (dp_i, dp_f, (P_o * C).sum((0, 1)))
        return (None, None, None, dx, dw_ih, dw_hh, db, db, dh, dc, *dpeep)


class CIFGRecurrence(torch.autograd.Function):
    """One direction of a CIFG-LSTM (gate order f, g=c~, o; i = 1 - f).

    forward::

        f = sigma(a_f),  c~ = tanh(a_g),  o = sigma(a_o)
        c_t = f * c_{t-1} + (1 - f) * c~ = c~ + f * (c_{t-1} - c~),    h_t = o * tanh(c_t)

    backward::

        da_o = dh * tanh(c_t) * o(1-o),          dc += dh * o * (1 - tanh(c_t)^2)
        da_f = dc * (c_{t-1} - c~) * f(1-f),      da_g = dc * (1 - f) * (1 - c~^2)
        dc_{t-1} = dc * f,                        dh_{t-1} = dy_{t-1} + W_hh^T da
    """

    @staticmethod
    def forward(ctx, batch_sizes, last, x, w_ih, w_hh, b_ih, b_hh, h0, c0):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        ns = steps(T, B, batch_sizes)
        padded = ns[-1] < B
        G = input_projection(x, w_ih, b_ih + b_hh)            # (T, B, 3H), activated in place
        Y, C, TC = (new_buffer(G, (T, B, H), padded) for _ in range(3))
        Gs = G.unbind(0)
        Fg, Cg, O = (G[..., k * H:(k + 1) * H].unbind(0) for k in range(3))
        Ys, Cs, TCs = Y.unbind(0), C.unbind(0), TC.unbind(0)
        w_hh_t = w_hh.t()
        for t in range(T):
            n = ns[t]
            h_prev = h0[:n] if t == 0 else Ys[t - 1][:n]
            c_prev = c0[:n] if t == 0 else Cs[t - 1][:n]
            rows(Gs, t, n, B).addmm_(h_prev, w_hh_t)
            f = rows(Fg, t, n, B).sigmoid_()
            g = rows(Cg, t, n, B).tanh_()
            c = torch.sub(c_prev, g, out=rows(Cs, t, n, B))
            c.mul_(f).add_(g)
            o = rows(O, t, n, B).sigmoid_()
            torch.mul(o, torch.tanh(c, out=rows(TCs, t, n, B)), out=rows(Ys, t, n, B))
        ctx.ns = ns
        ctx.save_for_backward(x, w_ih, w_hh, h0, c0, G, Y, C, TC)
        return Y, final_state(Y, last), final_state(C, last)

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT, dcT):
        x, w_ih, w_hh, h0, c0, G, Y, C, TC = ctx.saved_tensors
        ns = ctx.ns
        T, B, H = Y.shape
        # every factor that does not depend on dh, dc: computed for all steps at once, into dG
        dG, Q = torch.empty_like(G), torch.empty_like(Y)
        f, g, o = G.split(H, 2)
        P_f, P_g, P_o = dG.split(H, 2)
        one = G.new_ones(())
        torch.sub(c0, g[0], out=P_f[0])                      # (c_{t-1} - c~) f(1-f)
        torch.sub(C[:-1], g[1:], out=P_f[1:])
        P_f.mul_(torch.addcmul(f, f, f, value=-1, out=Q))    # Q as scratch space
        torch.addcmul(one, g, g, value=-1, out=P_g)          # (1 - c~^2)(1 - f)
        P_g.addcmul_(f, P_g, value=-1)
        torch.addcmul(o, o, o, value=-1, out=P_o).mul_(TC)   # o(1-o) tanh(c_t)
        torch.addcmul(one, TC, TC, value=-1, out=Q).mul_(o)  # o (1 - tanh(c_t)^2)
        mask = padding_mask(x, ns if ns[-1] < B else None)
        if mask is not None:                                 # rows past a sequence's end: zero
            dG.mul_(mask)
        dh, dc = cell_state_walk(dG, 2, P_o, Q, f, dY, dhT, dcT, w_hh, ns)   # R = f
        dx, dw_ih, dw_hh, db = all_grads(dG, x, w_ih, Y, h0, ctx.needs_input_grad[2])
        return None, None, dx, dw_ih, dw_hh, db, db, dh, dc


class _LSTMBase(ForgetBiasMixin, ScratchStack):
    has_cell_state = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, forget_bias: float | None = 1.0):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.set_forget_bias(ForgetBiasMixin.forget_bias if forget_bias is None else forget_bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_bias={self.forget_bias}"


@register_scratch("lstm")
class ScratchLSTM(_LSTMBase):
    """LSTM (Hochreiter & Schmidhuber 1997) with the forget gate of Gers et al. (2000)::

        i = sigma(W_ii x + b_ii + W_hi h + b_hi)     f = sigma(W_if x + b_if + W_hf h + b_hf)
        c~ = tanh(W_ig x + b_ig + W_hg h + b_hg)     o = sigma(W_io x + b_io + W_ho h + b_ho)
        c_t = f * c_{t-1} + i * c~                   h_t = o * tanh(c_t)

    Parameters as ``nn.LSTM`` (gate order i, f, g=c~, o).
    """

    gates = ("i", "f", "g", "o")
    fused_module = nn.LSTM

    def cell_step(self, x_t, state, params):
        h, c = state
        w_ih, w_hh, b_ih, b_hh = params[:4]
        a_i, a_f, a_g, a_o = (x_t @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, 1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h, c), {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        return LSTMRecurrence.apply(False, batch_sizes, last, x, *params, h0, c0)


@register_scratch("peephole")
class PeepholeLSTM(_LSTMBase):
    """LSTM with diagonal peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that
    time and count"): the gates see the cell state, i and f the previous one, o the new one::

        i = sigma(W_ii x + W_hi h_{t-1} + p_i * c_{t-1} + b_i)
        f = sigma(W_if x + W_hf h_{t-1} + p_f * c_{t-1} + b_f)
        c~ = tanh(W_ig x + W_hg h_{t-1} + b_g)
        c_t = f * c_{t-1} + i * c~
        o = sigma(W_io x + W_ho h_{t-1} + p_o * c_t + b_o)
        h_t = o * tanh(c_t)

    Parameters: those of ``nn.LSTM`` plus ``weight_ci/cf/co_l{k}{sfx}`` = p_i, p_f, p_o, each (H,).
    """

    gates = ("i", "f", "g", "o")
    extra_params = ("weight_ci", "weight_cf", "weight_co")

    def cell_step(self, x_t, state, params):
        h, c_prev = state
        w_ih, w_hh, b_ih, b_hh, p_i, p_f, p_o = params
        a_i, a_f, a_g, a_o = (x_t @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, 1)
        i = torch.sigmoid(a_i + p_i * c_prev)
        f = torch.sigmoid(a_f + p_f * c_prev)
        g = torch.tanh(a_g)
        c = f * c_prev + i * g
        o = torch.sigmoid(a_o + p_o * c)
        h = o * torch.tanh(c)
        return (h, c), {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        return LSTMRecurrence.apply(True, batch_sizes, last, x, *params[:4], h0, c0, *params[4:])


@register_scratch("cifg")
class CIFGLSTM(_LSTMBase):
    """Coupled input-forget gate LSTM (Greff et al. 2017, "LSTM: A Search Space Odyssey"): the
    input gate is tied to the forget gate, i = 1 - f, saving a quarter of the weights::

        f = sigma(W_if x + b_if + W_hf h + b_hf)     i = 1 - f
        c~ = tanh(W_ig x + b_ig + W_hg h + b_hg)     o = sigma(W_io x + b_io + W_ho h + b_ho)
        c_t = f * c_{t-1} + i * c~                   h_t = o * tanh(c_t)

    Parameters as ``nn.LSTM`` without the input gate (gate order f, g=c~, o; 3H rows).
    """

    gates = ("f", "g", "o")

    def cell_step(self, x_t, state, params):
        h, c = state
        w_ih, w_hh, b_ih, b_hh = params
        a_f, a_g, a_o = (x_t @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(3, 1)
        f, g, o = torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        i = 1 - f
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h, c), {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        return CIFGRecurrence.apply(batch_sizes, last, x, *params, h0, c0)
