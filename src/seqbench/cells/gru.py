"""GRU from scratch (Cho et al. 2014) in torch's gate convention and parameter layout."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from seqbench.cells import register_scratch
from seqbench.cells.scratch import (ScratchStack, final_state, input_projection,
                                    new_buffer, projection_grads, recurrent_weight_grad, rows,
                                    start_hidden_grad, steps)


class GRURecurrence(torch.autograd.Function):
    """One direction of a GRU (gate order r, z, n).

    forward (hn = W_hn h_{t-1} + b_hn is kept for the backward)::

        r = sigma(a_r),  z = sigma(a_z),  n = tanh(W_in x + b_in + r * hn)
        h_t = (1 - z) * n + z * h_{t-1} = n + z * (h_{t-1} - n)

    backward (dh: gradient w.r.t. h_t)::

        da_n = dh * (1 - z) * (1 - n^2),   da_z = dh * (h_{t-1} - n) * z(1-z)
        da_r = da_n * hn * r(1-r)
        dh_{t-1} = dy_{t-1} + dh * z + W_hh^T (da_r, da_z, da_n * r)

    The gradients live in one buffer ``D = (da_n * r, da_r, da_z, da_n)``: ``D[..., H:]`` is the
    input side in order (r, z, n), ``D[..., :3H]`` the hidden side in order (n, r, z), which
    the backward multiplies with W_hh's rows permuted the same way.
    """

    @staticmethod
    def forward(ctx, batch_sizes, last, x, w_ih, w_hh, b_ih, b_hh, h0):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        ns = steps(T, B, batch_sizes)
        padded = ns[-1] < B
        bias = b_ih.clone()
        bias[:2 * H] += b_hh[:2 * H]                          # b_hn stays inside r * (...)
        G = input_projection(x, w_ih, bias)                   # (T, B, 3H), activated in place
        Y, HN = (new_buffer(G, (T, B, H), padded) for _ in range(2))
        RZ = G[..., :2 * H].unbind(0)
        R, Z, N = (G[..., k * H:(k + 1) * H].unbind(0) for k in range(3))
        Ys, HNs = Y.unbind(0), HN.unbind(0)
        w_rz_t, w_n_t, b_hn = w_hh[:2 * H].t(), w_hh[2 * H:].t(), b_hh[2 * H:]
        for t in range(T):
            n = ns[t]
            h_prev = h0[:n] if t == 0 else Ys[t - 1][:n]
            rows(RZ, t, n, B).addmm_(h_prev, w_rz_t).sigmoid_()
            hn = torch.addmm(b_hn, h_prev, w_n_t, out=rows(HNs, t, n, B))
            cand = rows(N, t, n, B).addcmul_(rows(R, t, n, B), hn).tanh_()
            torch.sub(h_prev, cand, out=rows(Ys, t, n, B)).mul_(rows(Z, t, n, B)).add_(cand)
        ctx.ns = ns
        ctx.save_for_backward(x, w_ih, w_hh, h0, G, Y, HN)
        return Y, final_state(Y, last)

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT):
        x, w_ih, w_hh, h0, G, Y, HN = ctx.saved_tensors
        ns = ctx.ns
        T, B, H = Y.shape
        R, Z, N = (G[..., k * H:(k + 1) * H].unbind(0) for k in range(3))
        Ys, HNs, dYs = Y.unbind(0), HN.unbind(0), dY.unbind(0)
        D = new_buffer(G, (T, B, 4 * H), ns[-1] < B)
        Dh = D[..., :3 * H].unbind(0)                         # hidden side, rows (n, r, z)
        dNR, dR, dZ, dN = (D[..., k * H:(k + 1) * H].unbind(0) for k in range(4))
        w_hh_nrz = torch.cat([w_hh[2 * H:], w_hh[:2 * H]])
        dh = start_hidden_grad(dhT, dY, ns)
        ones, tmp = G.new_ones(B, H), G.new_empty(B, H)
        for t in range(T - 1, -1, -1):
            n = ns[t]
            r, z, cand, hn = (rows(v, t, n, B) for v in (R, Z, N, HNs))
            h_prev = h0[:n] if t == 0 else Ys[t - 1][:n]
            dh_, one, tmp_ = dh[:n], ones[:n], tmp[:n]
            da_n = torch.addcmul(one, cand, cand, value=-1, out=rows(dN, t, n, B)).mul_(dh_)
            da_n.mul_(torch.sub(one, z, out=tmp_))
            da_z = torch.sub(h_prev, cand, out=rows(dZ, t, n, B)).mul_(dh_)
            da_z.mul_(torch.addcmul(z, z, z, value=-1, out=tmp_))
            torch.addcmul(r, r, r, value=-1, out=rows(dR, t, n, B)).mul_(hn).mul_(da_n)
            torch.mul(da_n, r, out=rows(dNR, t, n, B))
            # dh_{t-1} = dy_{t-1} + dh * z + W_hh^T (da_r, da_z, da_n * r)
            if t > 0:
                torch.addcmul(dYs[t - 1][:n], dh_, z, out=tmp_)
            else:
                torch.mul(dh_, z, out=tmp_)
            torch.addmm(tmp_, rows(Dh, t, n, B), w_hh_nrz, out=dh_)
            if t > 0 and ns[t - 1] > n:                       # rows whose last step is t-1
                dh[n:ns[t - 1]] += dYs[t - 1][n:ns[t - 1]]
        dx, dw_ih, db_ih = projection_grads(D[..., H:], x, w_ih, ctx.needs_input_grad[2])
        dw_hh = recurrent_weight_grad(D[..., :3 * H], Y, h0)  # rows (n, r, z) -> (r, z, n)
        dw_hh = torch.cat([dw_hh[H:], dw_hh[:H]])
        db_hh = D[..., :3 * H].sum((0, 1))
        db_hh = torch.cat([db_hh[H:], db_hh[:H]])
        return None, None, dx, dw_ih, dw_hh, db_ih, db_hh, dh


@register_scratch("gru")
class ScratchGRU(ScratchStack):
    """Gated recurrent unit (Cho et al. 2014), torch's convention (r applied to W_hn h + b_hn)::

        r = sigma(W_ir x + b_ir + W_hr h + b_hr)
        z = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters as ``nn.GRU`` (gate order r, z, n).
    """

    gates = ("r", "z", "n")
    fused_module = nn.GRU

    def cell_step(self, x_t, h, params):
        w_ih, w_hh, b_ih, b_hh = params
        x_r, x_z, x_n = (x_t @ w_ih.t() + b_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ w_hh.t() + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, {"r": r, "z": z, "n": n, "h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        y, h = GRURecurrence.apply(batch_sizes, last, x, *params, h0)
        return y, h, None
