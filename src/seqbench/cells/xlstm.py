"""xLSTM's two cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", arXiv 2405.04517),
written after the equations of the paper and of NX-AI/xlstm's pure-PyTorch "vanilla" backends.

Both use *exponential gating*: the input gate is i_t = exp(i~_t) (and sLSTM's forget gate
f_t = exp(f~_t)), unbounded, so the memories are kept in a stabilised form. With the stabiliser
state m_t (a running log-scale of the memory),

    m_t  = max(log f_t + m_{t-1}, i~_t)
    i'_t = exp(i~_t - m_t)  <= 1        f'_t = exp(log f_t + m_{t-1} - m_t)  <= 1

and the memory and its normaliser n_t are updated with i', f' instead of i, f. The stored c_t, n_t
are the true ones times exp(-m_t); h_t only reads their ratio (sLSTM) or floors the normaliser at
exp(-m_t) (mLSTM, i.e. at 1 on the true scale), so m changes no output, only the range of the
numbers: no exp() ever sees a positive argument.

* :class:`SLSTM` (``model=slstm``): scalar memory with recurrent connections (memory mixing
  through h_{t-1}); sequential by nature.
* :class:`MLSTM` (``model=mlstm``): a d x d matrix memory per head, covariance update v k^T, no
  recurrence through h: the whole window can be computed at once in an attention-like *parallel*
  form (``mode: parallel``), equal to the step-by-step recurrence (``mode: sequential``).

State layout (the :class:`~seqbench.cells.base.RecurrentStack` interface: a pair (h, c) of
``(L*D, B, width)`` tensors). The extra memories are packed along the last dim of c
(``cell_state_size``), as the reference packs sLSTM's ``(y, c, n, m)`` into one states tensor:

    sLSTM   h (L*D, B, H)    c (L*D, B, 3H)              = [c | n | m]
    mLSTM   h (L*D, B, H)    c (L*D, B, H*d + H + NH)    = [C (NH*d*d) | n (NH*d) | m (NH)]

with NH heads of size d = H / NH (C row-major, ``C[v_index, k_index]``). For mLSTM with one head
that is H^2 + H + 1 numbers per unit column: fine at benchmark sizes (H = 128: 16.5k floats per
sequence and layer), quadratic in H. mLSTM's h is part of the state only to be read (classification
reads the top layer's final h, as for every cell); its recurrence never uses it
(``output_feeds_back = False``). Detaching, beam re-ordering (dim 1) and truncated BPTT treat these
tensors like any other state.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqbench.cells import register_scratch
from torch.autograd.function import once_differentiable

from seqbench.cells.scratch import (ScratchStack, all_grads, final_state, hidden_grad_step, input_projection,
                                    new_buffer, padding_mask, rows, start_hidden_grad, steps)
from seqbench.errors import ConfigError, choice_error

FORGET_GATES = ("exp", "sigmoid")
MODES = ("parallel", "sequential")


def normalised(numerator: Tensor, dot: Tensor, m: Tensor) -> Tensor:
    """mLSTM's read-out ``numerator / max(|dot|, exp(-m))`` (``numerator (..., d)``, ``dot`` and
    ``m (...)``) without exp of a positive number: for m < 0 both terms are scaled by exp(m),
    ``numerator exp(m) / max(|dot| exp(m), 1)``; the same value, but exp(-m) would overflow
    (float32: m < -88, e.g. after a run of closed gates) and its gradient be inf * 0 = nan.
    An exact 0 / 0 (exp(-m) underflowed and dot = 0) is floored at the dtype's smallest normal."""
    scale = torch.exp(m.clamp(max=0.0))                              # exp(min(m, 0)) <= 1
    floor = torch.exp(-m.clamp(min=0.0))                             # exp(-max(m, 0)) <= 1
    denominator = torch.maximum(dot.abs() * scale, floor).clamp_min(torch.finfo(dot.dtype).tiny)
    return numerator * (scale / denominator).unsqueeze(-1)


class SLSTMRecurrence(torch.autograd.Function):
    """One direction of the sLSTM (:class:`SLSTM`'s equations) with a hand-written BPTT.

    With a_t = log f_t + m_{t-1} (-inf for an empty memory), m_t = max(a_t, i~_t) and
    i' = exp(i~ - m), f' = exp(a - m), the backward of a step, given dh (w.r.t. h_t) and dc, dn, dm
    (w.r.t. the carried c_t, n_t, m_t, from step t+1)::

        do~ = dh c / n * o(1-o)           dc += dh o / n        dn -= dh h / n
        df' = dc c_{t-1} + dn n_{t-1}     di' = dc z + dn       dz~ = dc i' (1-z^2)
        dm_t += -(df' f' + di' i')                         (m_t enters i' and f')
        da = df' f' + [a_t >= i~_t] dm_t  di~ = di' i' + [a_t < i~_t] dm_t     (the max's branch)
        df~ = da (f = exp) | da (1 - sigma(f~)) (f = sigma: log f = log sigma(f~))
        dc_{t-1} = dc f'   dn_{t-1} = dn f'   dm_{t-1} = da   dh_{t-1} = W_hh^T [di~, df~, dz~, do~] + dy_{t-1}

    Like the LSTM's fast path the forward keeps the activations (i', f', z, o over the gate
    buffer), the weight gradients are one matmul each over all steps, and a padded batch works
    on the active rows ``[:n_t]``. Equal to the reference loop under autograd (tests, float64).
    """

    @staticmethod
    def forward(ctx, sigmoid_forget: bool, batch_sizes, last, x, w_ih, w_hh, b_ih, b_hh, h0, c0):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        ns = steps(T, B, batch_sizes)
        padded = ns[-1] < B
        G = input_projection(x, w_ih, b_ih + b_hh)              # (T, B, 4H): [i~ | f~ | z~ | o~]
        Y, C, N, M = (new_buffer(G, (T, B, H), padded) for _ in range(4))
        take = torch.zeros(T, B, H, dtype=torch.bool, device=x.device)   # a_t >= i~_t
        SF = new_buffer(G, (T, B, H), padded) if sigmoid_forget else None   # sigma(f~)
        w_hh_t = w_hh.t()
        c0_, n0_, m0_ = c0.chunk(3, 1)
        minus_inf = G.new_full((), -math.inf)
        for t in range(T):
            n = ns[t]
            h_prev = h0[:n] if t == 0 else Y[t - 1, :n]
            c_prev = c0_[:n] if t == 0 else C[t - 1, :n]
            n_prev = n0_[:n] if t == 0 else N[t - 1, :n]
            m_prev = m0_[:n] if t == 0 else M[t - 1, :n]
            g = G[t, :n]
            g.addmm_(h_prev, w_hh_t)
            i_pre, f_pre, z_pre, o_pre = g.split(H, 1)
            if sigmoid_forget:
                torch.sigmoid(f_pre, out=SF[t, :n])
                log_f = F.logsigmoid(f_pre)
            else:
                log_f = f_pre
            a = torch.where(n_prev == 0, minus_inf, log_f + m_prev)   # an empty memory: -inf
            m = torch.maximum(a, i_pre, out=M[t, :n])
            torch.ge(a, i_pre, out=take[t, :n])
            i_pre.sub_(m).exp_()                                     # i' = exp(i~ - m)
            torch.exp(a.sub_(m), out=f_pre)                          # f' = exp(a - m)
            z_pre.tanh_()
            o_pre.sigmoid_()
            c = torch.mul(f_pre, c_prev, out=C[t, :n]).addcmul_(i_pre, z_pre)
            nt = torch.mul(f_pre, n_prev, out=N[t, :n]).add_(i_pre)
            torch.mul(o_pre, c, out=Y[t, :n]).div_(nt)
        ctx.sigmoid_forget, ctx.ns = sigmoid_forget, ns
        ctx.save_for_backward(x, w_ih, w_hh, h0, c0, G, Y, C, N, take, *(() if SF is None else (SF,)))
        cT = torch.cat([final_state(C, last), final_state(N, last), final_state(M, last)], 1)
        return Y, final_state(Y, last), cT

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, dhT, dcT):
        x, w_ih, w_hh, h0, c0, G, Y, C, N, take, *SF = ctx.saved_tensors
        ns = ctx.ns
        T, B, H = Y.shape
        padded = ns[-1] < B
        dG = new_buffer(G, G.shape, padded)
        c0_, n0_, _ = c0.chunk(3, 1)
        dh = start_hidden_grad(dhT, dY, ns)
        dc, dn, dm = (d.clone() for d in dcT.chunk(3, 1))
        for t in range(T - 1, -1, -1):
            n = ns[t]
            ip, fp, z, o = G[t, :n].split(H, 1)
            h, c, nt = Y[t, :n], C[t, :n], N[t, :n]
            c_prev = c0_[:n] if t == 0 else C[t - 1, :n]
            n_prev = n0_[:n] if t == 0 else N[t - 1, :n]
            dh_, dc_, dn_, dm_ = dh[:n], dc[:n], dn[:n], dm[:n]
            d_i, d_f, d_z, d_o = dG[t, :n].split(H, 1)
            inv_n = nt.reciprocal()
            dh_n = dh_ * inv_n
            torch.mul(dh_n, c, out=d_o).mul_(o).mul_(1 - o)              # do~
            dc_.addcmul_(dh_n, o)
            dn_.addcmul_(dh_n, h, value=-1.0)
            g_f = (dc_ * c_prev).addcmul_(dn_, n_prev).mul_(fp)          # df' f'
            g_i = torch.addcmul(dn_, dc_, z).mul_(ip)                    # di' i'
            torch.mul(dc_, ip, out=d_z).mul_(1 - z * z)                  # dz~
            dm_.sub_(g_f).sub_(g_i)
            sel = take[t, :n]
            d_a = torch.where(sel, g_f + dm_, g_f)
            torch.where(sel, g_i, g_i + dm_, out=d_i)
            if ctx.sigmoid_forget:
                torch.mul(d_a, 1 - SF[0][t, :n], out=d_f)
            else:
                d_f.copy_(d_a)
            dc_.mul_(fp)
            dn_.mul_(fp)
            dm_.copy_(d_a)
            hidden_grad_step(dh, dY.unbind(0), dG[t, :n], w_hh, t, ns)
        dx, dw_ih, dw_hh, db = all_grads(dG, x, w_ih, Y, h0, ctx.needs_input_grad[3])
        return None, None, None, dx, dw_ih, dw_hh, db, db, dh, torch.cat([dc, dn, dm], 1)


@register_scratch("slstm")
class SLSTM(ScratchStack):
    """sLSTM (Beck et al. 2024, Sec. 2.2), one head, full recurrent matrices::

        z_t = tanh(W_z x_t + R_z h_{t-1} + b_z)        o_t = sigma(W_o x_t + R_o h_{t-1} + b_o)
        i~_t = W_i x_t + R_i h_{t-1} + b_i             f~_t = W_f x_t + R_f h_{t-1} + b_f
        log f_t = f~_t (forget_gate: exp, the default) | log sigma(f~_t) (forget_gate: sigmoid)
        m_t = max(log f_t + m_{t-1}, i~_t)
        i'_t = exp(i~_t - m_t)                         f'_t = exp(log f_t + m_{t-1} - m_t)
        c_t = f'_t c_{t-1} + i'_t z_t                  n_t = f'_t n_{t-1} + i'_t
        h_t = o_t * c_t / n_t

    The paper allows f = sigma or exp; exp is the default here (the reference's vanilla kernel
    uses sigmoid: ``forget_gate: sigmoid``). A unit with n_{t-1} = 0 (an empty memory, e.g. the
    zero initial state) has m_{t-1} = -inf: m_t = i~_t and n_t = 1, where m_{t-1} = 0 would give
    n_t = exp(i~_t - f~_t), which underflows to 0 (h = 0/0) for large pre-activations. The
    reference does the same on its first step (``if all(n == 0): m = i~``), here per unit.

    Parameters per layer and direction: torch's LSTM layout, ``weight_ih (4H, in)``, ``weight_hh
    (4H, H)`` (R: the recurrent init schemes apply per gate block), ``bias_ih`` and ``bias_hh
    (4H,)`` whose sum is the paper's b, gate order (i, f, z, o) = the reference's and torch's
    (i, f, g, o): 4H (in + H + 2), the same names and shapes as ``nn.LSTM`` (``copy_weights``
    loads one). All ~ U(-1/sqrt(H), 1/sqrt(H)). State: h and c = [c | n | m] (module docstring).
    The fast path is :class:`SLSTMRecurrence` (hand-written BPTT); ``fast = False`` runs the
    reference loop of ``cell_step`` under autograd.
    """

    gates = ("i", "f", "z", "o")
    has_cell_state = True
    choices = {"forget_gate": FORGET_GATES}

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, forget_gate: str = "exp"):
        if forget_gate not in FORGET_GATES:
            raise choice_error("model.forget_gate", forget_gate, FORGET_GATES)
        self.forget_gate = forget_gate
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)

    @property
    def cell_state_size(self) -> int:
        return 3 * self.hidden_size

    def cell_step(self, x_t, state, params):
        h, packed = state
        w_ih, w_hh, b_ih, b_hh = params
        i_pre, f_pre, z_pre, o_pre = (torch.addmm(b_ih, x_t, w_ih.t()) + torch.addmm(b_hh, h, w_hh.t())).chunk(4, 1)
        c, n, m = packed.chunk(3, 1)
        log_f = f_pre if self.forget_gate == "exp" else F.logsigmoid(f_pre)
        m_prev = torch.where(n == 0, torch.full_like(m, -math.inf), m)     # empty memory: -inf
        m = torch.maximum(log_f + m_prev, i_pre)
        i, f = torch.exp(i_pre - m), torch.exp(log_f + m_prev - m)
        z, o = torch.tanh(z_pre), torch.sigmoid(o_pre)
        c = f * c + i * z
        n = f * n + i
        h = o * c / n
        return (h, torch.cat([c, n, m], 1)), {"i": i, "f": f, "z": z, "o": o, "c": c, "n": n, "m": m, "h": h}

    def recurrence(self, x, params, h0, c0, batch_sizes, last):
        return SLSTMRecurrence.apply(self.forget_gate == "sigmoid", batch_sizes, last, x, *params, h0, c0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_gate={self.forget_gate!r}"


@register_scratch("mlstm")
class MLSTM(ScratchStack):
    """mLSTM (Beck et al. 2024, Sec. 2.3): a matrix memory C (d x d per head) written with the
    covariance rule and read with a query; gates of x_t only, so no recurrence through h::

        q_t = W_q x_t + b_q     k_t = (W_k x_t + b_k) / sqrt(d)     v_t = W_v x_t + b_v
        o_t = sigma(W_o x_t + b_o)
        i~_t = w_i . x_t + b_i,   f~_t = w_f . x_t + b_f            (one scalar per head)
        log f_t = log sigma(f~_t)                                    (as the reference)
        m_t = max(log f_t + m_{t-1}, i~_t)
        i'_t = exp(i~_t - m_t)                f'_t = exp(log f_t + m_{t-1} - m_t)
        C_t = f'_t C_{t-1} + i'_t v_t k_t^T    n_t = f'_t n_{t-1} + i'_t k_t
        h_t = o_t * (C_t q_t) / max(|n_t . q_t|, exp(-m_t))

    ``mode: parallel`` computes a whole window at once (the reference's
    ``parallel_stabilized_simple``, extended by the carried state). With F_ts = sum_{r=s+1..t}
    log f_r and the initial state (C_0, n_0, m_0) as a source at s = 0 of log-weight F_t0 + m_0::

        log D_ts = F_ts + i~_s  (s <= t, else -inf)     log D_t0 = F_t0 + m_0
        m_t = max(max_s log D_ts, log D_t0)             D = exp(log D - m_t)   (all <= 1)
        S = (Q K^T) * D                                 (causal, decayed attention scores)
        h~_t = (S V + D_t0 C_0 q_t) / max(|sum_s S_ts + D_t0 n_0 . q_t|, exp(-m_t))

    which unrolls the recurrence exactly (same m_t, C_t q_t and n_t . q_t), so the carried state
    of truncated BPTT is used in the parallel form too; the final state (C_T, n_T, m_T) is the row
    t = T of the same weights. ``mode: sequential`` runs the recurrence step by step (what
    generation does, one token at a time, in both modes). Both give the same numbers (tests, float64).
    Memory of the parallel form: (B, NH, T, T) per layer, fine at BPTT windows of ~100.

    The paper's normaliser floor is used as written (no eps; the reference adds 1e-6), computed
    without overflow for m < 0 (:func:`normalised`).

    Parameters per layer and direction: ``weight_ih (4H + 2NH, in)`` and ``bias (4H + 2NH,)``,
    blocks (q, k, v, o) of H rows then (i, f) of NH rows: (4H + 2NH)(in + 1). All ~ U(-1/sqrt(H),
    1/sqrt(H)) except the forget bias, linspace(3, 6) over the heads (the reference's init: f ~
    0.95-1, a long memory at the start). No ``weight_hh``: the recurrent init schemes refuse it.
    ``num_heads`` must divide ``hidden_size`` (with ``param_budget``, keep ``num_heads: 1``: the
    hidden-size search tries sizes that are not multiples). State: h and c = [C | n | m].
    """

    gates = ("q", "k", "v", "o", "i", "f")
    has_cell_state = True
    fresh_cell_state_as_none = True   # no B x d^2 zero memory to allocate and read
    output_feeds_back = False
    choices = {"mode": MODES}

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, mode: str = "parallel",
                 num_heads: int = 1):
        if mode not in MODES:
            raise choice_error("model.mode", mode, MODES)
        if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
            raise ConfigError(f"model.num_heads={num_heads} must be an integer >= 1")
        if hidden_size % num_heads:
            raise ConfigError(f"model.hidden_size={hidden_size} must be a multiple of model.num_heads={num_heads}"
                              f" (with model.param_budget, use num_heads: 1)")
        self.mode, self.num_heads = mode, num_heads
        #: d, the size of a head: C is d x d per head
        self.head_size = hidden_size // num_heads
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)

    def parameter_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        rows = 4 * self.hidden_size + 2 * self.num_heads
        return {"weight_ih": (rows, in_size), "bias": (rows,)}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        start = 4 * self.hidden_size + self.num_heads                 # the forget-gate rows
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("bias"):
                    p[start:].copy_(torch.linspace(3.0, 6.0, self.num_heads))

    @property
    def cell_state_size(self) -> int:
        return self.hidden_size * self.head_size + self.hidden_size + self.num_heads

    # ------------------------------------------------------------ packing and projections
    def unpack(self, packed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """c ``(B, width)`` -> C ``(B, NH, d, d)``, n ``(B, NH, d)``, m ``(B, NH)``."""
        B, NH, d = packed.shape[0], self.num_heads, self.head_size
        C, n, m = packed.split([NH * d * d, NH * d, NH], -1)
        return C.reshape(B, NH, d, d), n.reshape(B, NH, d), m

    @staticmethod
    def pack(C: Tensor, n: Tensor, m: Tensor) -> Tensor:
        return torch.cat([C.flatten(1), n.flatten(1), m], -1)

    def split(self, pre: Tensor) -> tuple[Tensor, ...]:
        """Pre-activations ``(..., 4H + 2NH)`` -> q, k (scaled by 1/sqrt(d)), v ``(..., NH, d)``,
        o's pre-activation ``(..., H)``, i~ and f~ ``(..., NH)``."""
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        q, k, v, o, i_pre, f_pre = pre.split([H, H, H, H, NH, NH], -1)
        heads = pre.shape[:-1] + (NH, d)
        return (q.reshape(heads), k.reshape(heads) / math.sqrt(d), v.reshape(heads), o, i_pre, f_pre)

    # ------------------------------------------------------------ one step
    def cell_step(self, x_t, state, params):
        _, packed = state                                            # h_{t-1} is not an input
        w, b = params
        q, k, v, o_pre, i_pre, f_pre = self.split(torch.addmm(b, x_t, w.t()))
        C, n, m = self.unpack(packed)
        log_f = F.logsigmoid(f_pre)
        m_new = torch.maximum(log_f + m, i_pre)
        i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
        C = f[..., None, None] * C + i[..., None, None] * (v.unsqueeze(-1) * k.unsqueeze(-2))
        n = f.unsqueeze(-1) * n + i.unsqueeze(-1) * k
        h_tilde = normalised((C @ q.unsqueeze(-1)).squeeze(-1), (n * q).sum(-1), m_new)   # (B, NH, d)
        o = torch.sigmoid(o_pre)
        h = o * h_tilde.flatten(1)
        return (h, self.pack(C, n, m_new)), {"i": i, "f": f, "o": o, "m": m_new, "h": h}

    # ------------------------------------------------------------ a window at once
    def recurrence(self, x: Tensor, params, h0: Tensor, c0: Optional[Tensor],
                   batch_sizes: Optional[list[int]], last: Optional[Tensor]):
        T, B, _ = x.shape
        if self.mode == "sequential" or T == 1:
            return self.reference_recurrence(x, params, h0, c0, batch_sizes, last)
        # c0 None: a fresh state (fresh_cell_state_as_none), C0 = 0 and n0 = 0 add exactly nothing to
        # either sum below; skipping them saves a (B T d^2) matmul each way, as large as the attention
        carried = c0 is not None
        alive = padding_mask(x, batch_sizes)
        if alive is not None:
            x = x * alive                                            # finite values past the ends
        q, k, v, o_pre, i_pre, f_pre = self.split(input_projection(x, *params))
        q, k, v = (a.permute(1, 2, 0, 3) for a in (q, k, v))         # (B, NH, T, d)
        i_pre, log_f = i_pre.permute(1, 2, 0), F.logsigmoid(f_pre).permute(1, 2, 0)   # (B, NH, T)
        if carried:
            C0, n0, m0 = self.unpack(c0)
        else:                                                        # m0 = 0 still bounds the stabiliser
            m0 = x.new_zeros(B, self.num_heads)

        F_t0 = log_f.cumsum(-1)                                      # sum_{r <= t} log f_r
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        log_D = (F_t0.unsqueeze(-1) - F_t0.unsqueeze(-2) + i_pre.unsqueeze(-2)).masked_fill(~causal, -math.inf)
        log_D0 = F_t0 + m0.unsqueeze(-1)                             # the initial state's weight
        m = torch.maximum(log_D.amax(-1), log_D0)                    # (B, NH, T)
        D, D0 = torch.exp(log_D - m.unsqueeze(-1)), torch.exp(log_D0 - m)
        S = (q @ k.transpose(-1, -2)) * D                            # (B, NH, T, T)
        numerator, dot = S @ v, S.sum(-1)                            # C_t q_t, n_t . q_t
        if carried:
            numerator = numerator + D0.unsqueeze(-1) * (q @ C0.transpose(-1, -2))
            dot = dot + D0 * (q @ n0.unsqueeze(-1)).squeeze(-1)
        h_tilde = normalised(numerator, dot, m).permute(2, 0, 1, 3).reshape(T, B, -1)
        y = torch.sigmoid(o_pre) * h_tilde                           # (T, B, H)
        if alive is not None:
            y = y * alive

        # final memory: row t = last[b] of the weights
        t_last = (last if last is not None else torch.full((B,), T - 1, device=x.device)).view(B, 1, 1)
        NH = self.num_heads
        w = D.gather(2, t_last.unsqueeze(-1).expand(B, NH, 1, T)).squeeze(2)   # (B, NH, T)
        w0 = D0.gather(2, t_last.expand(B, NH, 1)).squeeze(2)                   # (B, NH)
        C_T = (w.unsqueeze(-1) * v).transpose(-1, -2) @ k             # sum_s w_s v_s k_s^T, (B, NH, d, d)
        n_T = (w.unsqueeze(-2) @ k).squeeze(-2)                       # sum_s w_s k_s
        if carried:
            C_T, n_T = C_T + w0[..., None, None] * C0, n_T + w0.unsqueeze(-1) * n0
        m_T = m.gather(2, t_last.expand(B, NH, 1)).squeeze(2)
        return y, final_state(y, last), self.pack(C_T, n_T, m_T)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}, num_heads={self.num_heads}"
