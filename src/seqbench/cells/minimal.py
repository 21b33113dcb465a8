"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201).

Both drop the previous state from the gates, so each layer is a *linear* recurrence whose
coefficients depend on the input alone::

    h_t = a_t * h_{t-1} + b_t,        a_t, b_t functions of x_t only, 0 < a_t < 1, b_t > 0

and all T steps of a layer can be computed at once by a parallel scan instead of a loop. The
scan runs in log space (Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential
Computation", arXiv 2311.06281), with the closed form of the recurrence::

    A_t = sum_{s<=t} log a_s                                         torch.cumsum
    h_t = exp(A_t) * h_0 + exp(A_t + logcumsumexp_{s<=t}(log b_s - A_s))  torch.logcumsumexp

The gates' logs come straight from their pre-activations (log sigma(k) = -softplus(-k),
log(1 - sigma(k)) = -softplus(k), and ``log_g`` below), so nothing is exponentiated and then
logged again. The initial state enters linearly, its log is never taken: any h_0 works, the
zeros of a fresh stack (the paper's code takes log h_0 and so needs h_0 > 0) as well as a state
carried across truncated-BPTT windows.

Three modes compute the same numbers (``mode``, a model option; ``auto``, the default, picks
``scan`` on a GPU and ``loop`` elsewhere):

* ``scan``: the parallel scan above over every window longer than one step; one step
  (generation, the gradient probe) runs the plain step. Parallel over T, so the mode for a GPU; on
  a CPU its exp/log passes over all B*T*H numbers (``logcumsumexp`` and its backward) cost more
  than the recurrence itself;
* ``loop``: the gates of all steps at once (as in ``scan``), then the linear recurrence in linear
  space, step by step without autograd, with its backward written out (:class:`LinearRecurrence`):
  T fused multiply-adds on B*H numbers each way, the fast mode on a CPU;
* ``sequential``: the plain step in a loop (``cell_step``) under autograd, what the paper calls
  sequential mode: the reference the other two are tested against.

Padded batches (``lengths``): the inputs past a sequence's end are zeroed before the scan (finite
values, no gradient reaches them), the outputs there are set to zero and the final state is read
at the sequence's last step; causality does the rest (later steps never change earlier ones).
Stacking, directions, dropout between layers: :class:`~seqbench.cells.scratch.ScratchStack`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from torch.autograd.function import once_differentiable

from seqbench.cells import register_scratch
from seqbench.cells.scratch import ScratchStack, final_state, input_projection, padding_mask
from seqbench.errors import choice_error

MODES = ("auto", "scan", "loop", "sequential")


def g(x: Tensor) -> Tensor:
    """The paper's candidate activation: x + 1/2 for x >= 0, sigma(x) below (continuous, > 0)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x) without forming g: log(x + 1/2) for x >= 0, -softplus(-x) = log sigma(x) below."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def parallel_scan_log(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` from the logs of a and b, ``(T, B, H)`` each,
    and ``h0 (B, H)``: ``h_t = exp(A_t) h_0 + exp(A_t + logcumsumexp(log b - A)_t)``, A = cumsum(log a)."""
    A = torch.cumsum(log_a, 0)
    return torch.exp(A + torch.logcumsumexp(log_b - A, 0)) + torch.exp(A) * h0


class LinearRecurrence(torch.autograd.Function):
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (t = 1..T) from ``a, b (T, B, H)`` and
    ``h0 (B, H)``, one fused multiply-add per step and no autograd graph. Backward, the same
    recurrence run in reverse on the gradients (G_t: the total gradient reaching h_t)::

        G_T = dh_T,   G_t = dh_t + a_{t+1} * G_{t+1}
        dL/db_t = G_t,   dL/da_t = G_t * h_{t-1},   dL/dh_0 = a_1 * G_1
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h = torch.empty_like(b)
        prev = h0
        for a_t, b_t, h_t in zip(a.unbind(0), b.unbind(0), h.unbind(0)):
            prev = torch.addcmul(b_t, a_t, prev, out=h_t)
        ctx.save_for_backward(a, h0, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh: Tensor):
        a, h0, h = ctx.saved_tensors
        G = dh.clone(memory_format=torch.contiguous_format)
        Gs, As = G.unbind(0), a.unbind(0)
        for t in range(len(Gs) - 2, -1, -1):
            Gs[t].addcmul_(As[t + 1], Gs[t + 1])
        h_prev = torch.cat([h0.expand_as(h[0]).unsqueeze(0), h[:-1]])
        return G * h_prev, G, (As[0] * Gs[0]).sum_to_size(h0.shape)


class MinimalRNN(ScratchStack):
    """Shared by minGRU and minLSTM: parameters ``weight_ih_l{k}{sfx} (G*H, in)`` and
    ``bias_ih_l{k}{sfx} (G*H,)`` only (one linear map of x_t per gate block, no recurrent matrix),
    the ``mode`` option and the scan. A subclass gives ``gates``, ``cell_step`` and
    ``log_coefficients``: the logs of a_t and b_t from the pre-activations of all steps."""

    choices = {"mode": MODES}

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, mode: str = "auto"):
        if mode not in MODES:
            raise choice_error("model.mode", mode, MODES)
        self.mode = mode
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)

    def parameter_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        GH = len(self.gates) * self.hidden_size
        return {"weight_ih": (GH, in_size), "bias_ih": (GH,)}

    def log_coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """``(log a, log b)`` of every step from the pre-activations ``pre (T, B, G*H)``."""
        raise NotImplementedError

    def coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)`` of every step, in linear space (the loop mode's inputs)."""
        raise NotImplementedError

    def recurrence(self, x: Tensor, params, h0: Tensor, c0: Optional[Tensor],
                   batch_sizes: Optional[list[int]], last: Optional[Tensor]):
        T = x.shape[0]
        mode = self.mode if self.mode != "auto" else ("scan" if x.is_cuda else "loop")
        if mode == "sequential" or T == 1:
            return self.reference_recurrence(x, params, h0, c0, batch_sizes, last)
        alive = padding_mask(x, batch_sizes)
        if alive is not None:
            x = x * alive                                            # finite values past the ends
        pre = input_projection(x, *params)
        if mode == "scan":
            h = parallel_scan_log(*self.log_coefficients(pre), h0)
        else:
            h = LinearRecurrence.apply(*self.coefficients(pre), h0)
        h_last = final_state(h, last)
        return (h if alive is None else h * alive), h_last, None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"


@register_scratch("mingru")
class MinGRU(MinimalRNN):
    """minGRU (Feng et al. 2024): a GRU whose update gate and candidate see only the input::

        z_t = sigma(W_z x_t + b_z)
        h~_t = g(W_h x_t + b_h),          g(x) = x + 1/2 (x >= 0), sigma(x) (x < 0)
        h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    i.e. a_t = 1 - z_t, b_t = z_t * h~_t; in log space log a = -softplus(k_z),
    log b = -softplus(-k_z) + log g(k_h) (k: pre-activations); in linear space (the loop mode)
    a = 1 - z, b = z g(k_h). Parameters per layer and
    direction: ``weight_ih (2H, in)`` and ``bias_ih (2H,)``, gate order (z, h~): 2 (in H + H).
    """

    gates = ("z", "h_tilde")

    def cell_step(self, x_t, h, params):
        w_ih, b_ih = params
        k_z, k_h = (x_t @ w_ih.t() + b_ih).chunk(2, 1)
        z, h_tilde = torch.sigmoid(k_z), g(k_h)
        h = (1 - z) * h + z * h_tilde
        return h, {"z": z, "h_tilde": h_tilde, "h": h}

    def log_coefficients(self, pre):
        k_z, k_h = pre.chunk(2, -1)
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)

    def coefficients(self, pre):
        k_z, k_h = pre.chunk(2, -1)
        z = torch.sigmoid(k_z)
        return 1 - z, z * g(k_h)


@register_scratch("minlstm")
class MinLSTM(MinimalRNN):
    """minLSTM (Feng et al. 2024): forget and input gates of the input only, normalised to sum to
    one so that the state's scale does not grow with time; no output gate, no cell state::

        f_t = sigma(W_f x_t + b_f)        i_t = sigma(W_i x_t + b_i)
        h~_t = g(W_h x_t + b_h)
        f'_t = f_t / (f_t + i_t)          i'_t = i_t / (f_t + i_t)
        h_t = f'_t * h_{t-1} + i'_t * h~_t

    In log space, with d = log i_t - log f_t = softplus(-k_f) - softplus(-k_i):
    log f' = -softplus(d), log i' = -softplus(-d), log b = log i' + log g(k_h); in linear space (the
    loop mode) a = f' = sigma(-d) and b = (1 - f') g(k_h), finite even where f and i both underflow. Parameters per
    layer and direction: ``weight_ih (3H, in)`` and ``bias_ih (3H,)``, gate order (f, i, h~):
    3 (in H + H).
    """

    gates = ("f", "i", "h_tilde")

    def cell_step(self, x_t, h, params):
        w_ih, b_ih = params
        k_f, k_i, k_h = (x_t @ w_ih.t() + b_ih).chunk(3, 1)
        f, i, h_tilde = torch.sigmoid(k_f), torch.sigmoid(k_i), g(k_h)
        f_norm, i_norm = f / (f + i), i / (f + i)
        h = f_norm * h + i_norm * h_tilde
        return h, {"f": f, "i": i, "f_norm": f_norm, "i_norm": i_norm, "h_tilde": h_tilde, "h": h}

    def log_coefficients(self, pre):
        k_f, k_i, k_h = pre.chunk(3, -1)
        d = F.softplus(-k_f) - F.softplus(-k_i)
        return -F.softplus(d), -F.softplus(-d) + log_g(k_h)

    def coefficients(self, pre):
        k_f, k_i, k_h = pre.chunk(3, -1)
        f_norm = torch.sigmoid(F.softplus(-k_i) - F.softplus(-k_f))  # f/(f+i), finite when both underflow
        return f_norm, (1 - f_norm) * g(k_h)
