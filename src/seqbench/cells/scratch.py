"""Shared machinery of the from-scratch cells: parameters, stacking, directions, padding.

A cell family (``rnn.py``, ``lstm.py``, ``gru.py``, ``minimal.py``, ``indrnn.py``, ``xlstm.py``)
subclasses :class:`ScratchStack` and provides

* ``gates``: the names of the gate blocks stacked in ``weight_ih``/``weight_hh`` (torch's order);
* ``cell_step``: one time step written plainly (the readable reference, also used by tests);
* ``recurrence`` (optional): the fast path, a ``torch.autograd.Function`` with a hand-written
  BPTT or a parallel scan; without it the stack runs ``cell_step`` in a Python loop under autograd;
* ``parameter_shapes`` (optional): a parameter layout other than torch's (below).

Everything else lives here. By default parameters follow torch's names and shapes, per layer
``k`` and direction (suffix ``""`` or ``"_reverse"``)::

    weight_ih_l{k}{sfx}  (G*H, in_k)    weight_hh_l{k}{sfx}  (G*H, H)
    bias_ih_l{k}{sfx}    (G*H,)         bias_hh_l{k}{sfx}    (G*H,)
    <extra>_l{k}{sfx}    (H,)           e.g. the peephole weights

with ``in_0 = input_size`` and ``in_k = D*H`` above, so weights copy 1:1 from/to ``nn.RNN``,
``nn.LSTM`` and ``nn.GRU`` (:func:`copy_weights`, :func:`load_fused_weights`). A cell without
recurrent matrices (minGRU: only ``weight_ih``, ``bias_ih``) overrides ``parameter_shapes``; the
recurrent-weight init schemes (``seqbench.init``) then refuse it with a ConfigError.

Inside, sequences are time-major ``(T, B, F)``. A padded batch (``lengths``) is sorted by
decreasing length, so that at step ``t`` the active sequences are the first ``n_t`` rows
(``batch_sizes[t] = n_t``, as in a packed sequence): the fast path simply works on ``[:n_t]``.
The reverse direction reads every sequence reversed *within its own length*, so it starts at the
sequence's true end; outputs past the end are zeros and the final state is the state at the end.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.cells.base import RecurrentStack, State

#: parameters of one layer and direction, in the order the recurrences take them
Params = tuple[Tensor, ...]


class ScratchStack(RecurrentStack):
    """Stacked, optionally bidirectional layers of one from-scratch cell.

    Subclass contract (one class per cell, registered with ``@register_scratch(name)``)::

        gates: tuple[str, ...]            # gate blocks of weight_ih / weight_hh, e.g. ("i","f","g","o")
        extra_params: tuple[str, ...]     # per-direction (H,) vectors, e.g. peephole weights
        has_cell_state: bool              # True: state is (h, c)
        fresh_cell_state_as_none: bool    # True: a fresh state reaches ``recurrence`` as c0=None
        cell_state_size: int (property)   # width of c; default H (xLSTM packs [c | n | m] into it)
        cell_step(self, x_t, state, params) -> (state, gates_dict)       # reference step
        recurrence(self, x, params, h0, c0, batch_sizes, last) -> (Y, hT, cT)   # fast path
        parameter_shapes(self, in_size) -> {name: shape}                 # optional layout

    plus the class attributes of :class:`RecurrentStack` (``fused_module``, ``choices``, ...)
    and its options as constructor keyword arguments (set them before ``super().__init__``).
    """

    gates: tuple[str, ...] = ()
    extra_params: tuple[str, ...] = ()
    #: True: when ``forward`` gets no state, ``recurrence`` gets ``c0=None`` instead of zeros, so that
    #: a cell whose zero state costs work (mLSTM: a B x d^2 memory, read by a matmul per step) skips
    #: it instead of allocating it and testing it for zeros; ``reference_recurrence`` reads None as zeros
    fresh_cell_state_as_none: bool = False

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        #: False: run the plain ``cell_step`` loop under autograd (reference, slow)
        self.fast = True
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self.num_directions
            shapes = self.parameter_shapes(in_size)
            self._param_names = tuple(shapes)
            for direction in range(self.num_directions):
                sfx = self._suffix(layer, direction)
                for name, shape in shapes.items():
                    self.register_parameter(f"{name}{sfx}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    # ---------------------------------------------------------------- parameters
    def parameter_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        """Names (without the ``_l{k}{sfx}`` suffix) and shapes of one layer's parameters for one
        direction, ``in_size`` wide input, in the order :meth:`layer_params` hands them to the
        recurrences. Default: torch's layout (module docstring) plus the ``extra_params``."""
        G, H = len(self.gates), self.hidden_size
        shapes = {"weight_ih": (G * H, in_size), "weight_hh": (G * H, H),
                  "bias_ih": (G * H,), "bias_hh": (G * H,)}
        return {**shapes, **{extra: (H,) for extra in self.extra_params}}

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def reset_parameters(self) -> None:
        """torch's init: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_params(self, layer: int, direction: int = 0) -> Params:
        """The parameters of one layer and direction in :meth:`parameter_shapes`' order; by
        default ``(weight_ih, weight_hh, bias_ih, bias_hh, *extras)``."""
        sfx = self._suffix(layer, direction)
        return tuple(getattr(self, n + sfx) for n in self._param_names)

    def gate_slice(self, gate: str) -> slice:
        """Rows of ``weight_ih``/``bias_*`` that belong to ``gate``."""
        k, H = self.gates.index(gate), self.hidden_size
        return slice(k * H, (k + 1) * H)

    # ---------------------------------------------------------------- one step (reference)
    def cell_step(self, x_t: Tensor, state: State, params: Params) -> tuple[State, dict]:
        raise NotImplementedError

    def step(self, x_t: Tensor, state: Optional[State] = None, layer: int = 0,
             direction: int = 0) -> tuple[State, dict[str, Tensor]]:
        """One time step of one layer/direction: ``x_t (B, in) -> (new state, {gate: (B, H)})``.

        The test hook for gate values (e.g. CIFG's ``i == 1 - f``); ``state`` has no layer dim.
        """
        if state is None:
            h = x_t.new_zeros(x_t.shape[0], self.hidden_size)
            state = (h, x_t.new_zeros(x_t.shape[0], self.cell_state_size)) if self.has_cell_state else h
        return self.cell_step(x_t, state, self.layer_params(layer, direction))

    # ---------------------------------------------------------------- one direction
    def recurrence(self, x: Tensor, params: Params, h0: Tensor, c0: Optional[Tensor],
                   batch_sizes: Optional[list[int]], last: Optional[Tensor]):
        """Fast path over one direction: ``x (T, B, in) -> (Y (T, B, H), hT, cT or None)``.

        ``batch_sizes[t]``: rows active at step t (None: all); ``last[b]``: row b's last step.
        Default: the reference loop, so a new cell works with ``cell_step`` alone."""
        return self.reference_recurrence(x, params, h0, c0, batch_sizes, last)

    def reference_recurrence(self, x: Tensor, params: Params, h0: Tensor, c0: Optional[Tensor],
                             batch_sizes: Optional[list[int]], last: Optional[Tensor]):
        """The same as :meth:`recurrence` with ``cell_step`` in a Python loop under autograd;
        finished sequences are masked (``torch.where``) instead of sliced off."""
        T, B = x.shape[:2]
        if self.has_cell_state and c0 is None:                  # a fresh state (fresh_cell_state_as_none)
            c0 = h0.new_zeros(B, self.cell_state_size)
        state = (h0, c0) if self.has_cell_state else h0
        outputs = []
        for t in range(T):
            new, _ = self.cell_step(x[t], state, params)
            if batch_sizes is not None and batch_sizes[t] < B:
                alive = (torch.arange(B, device=x.device) < batch_sizes[t]).unsqueeze(1)
                if self.has_cell_state:
                    new = tuple(torch.where(alive, n, s) for n, s in zip(new, state))
                else:
                    new = torch.where(alive, new, state)
                h = new[0] if self.has_cell_state else new
                outputs.append(torch.where(alive, h, torch.zeros_like(h)))
            else:
                outputs.append(new[0] if self.has_cell_state else new)
            state = new
        h, c = state if self.has_cell_state else (state, None)
        return torch.stack(outputs), h, c

    # ---------------------------------------------------------------- the stack
    def forward(self, x: Tensor, state: Optional[State] = None,
                lengths: Optional[Tensor] = None) -> tuple[Tensor, State]:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if state is None and self.has_cell_state and self.fresh_cell_state_as_none:
            state = (x.new_zeros(LD, B, H), None)
        elif state is None:
            state = self.initial_state(B, device=x.device, dtype=x.dtype)
        h0_all, c0_all = state if self.has_cell_state else (state, None)
        for s, width in ((h0_all, H), (c0_all, self.cell_state_size)):
            if s is not None and s.shape != (LD, B, width):
                raise ValueError(f"expected state of shape {(LD, B, width)}, got {tuple(s.shape)}")

        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:                                     # e.g. half inputs under autocast
            x = x.to(dtype)
            h0_all = h0_all.to(dtype)
            c0_all = c0_all.to(dtype) if c0_all is not None else None
        xt = x.transpose(0, 1)                                   # (T, B, I)
        batch_sizes = last = order = rev_index = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to("cpu", torch.long)
            if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise ValueError(f"lengths must be a ({B},) tensor of values in [1, {T}]")
            if int(lengths.min()) < T:                           # otherwise: nothing is padded
                lengths, order = torch.sort(lengths, descending=True, stable=True)
                t_idx = torch.arange(T)
                batch_sizes = (lengths.unsqueeze(0) > t_idx.unsqueeze(1)).sum(1).tolist()
                order = order.to(x.device)
                last = (lengths - 1).to(x.device)
                xt = xt.index_select(1, order)
                h0_all = h0_all.index_select(1, order)
                c0_all = c0_all.index_select(1, order) if c0_all is not None else None
                if self.bidirectional:                           # t -> L-1-t inside the sequence
                    t_idx = t_idx.unsqueeze(1)
                    rev_index = torch.where(t_idx < lengths, lengths - 1 - t_idx, t_idx).to(x.device)
        xt = xt.contiguous()
        batch_index = torch.arange(B, device=x.device)

        def reverse(seq: Tensor) -> Tensor:
            return seq.flip(0) if rev_index is None else seq[rev_index, batch_index]

        with torch.autocast(x.device.type, enabled=False):      # one dtype inside the kernels
            output, h_n, c_n = self._layers(xt, h0_all, c0_all, batch_sizes, last, reverse)
        if order is not None:                                    # undo the sort by length
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(B, device=order.device)
            output = output.index_select(0, inverse)
            h_n = h_n.index_select(1, inverse)
            c_n = c_n.index_select(1, inverse) if c_n is not None else None
        return output, ((h_n, c_n) if self.has_cell_state else h_n)

    def _layers(self, xt, h0_all, c0_all, batch_sizes, last, reverse):
        """All layers and directions on the time-major (sorted) batch -> (B, T, D*H), h_n, c_n."""
        run = self.recurrence if self.fast else self.reference_recurrence
        layer_in, h_n, c_n = xt, [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                inp = layer_in if direction == 0 else reverse(layer_in)
                c0 = c0_all[k] if c0_all is not None else None
                y, h, c = run(inp, self.layer_params(layer, direction), h0_all[k], c0,
                              batch_sizes, last)
                outputs.append(y if direction == 0 else reverse(y))
                h_n.append(h)
                c_n.append(c)
            layer_in = outputs[0] if len(outputs) == 1 else torch.cat(outputs, 2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)

        c_n = stack_layers(c_n) if self.has_cell_state else None
        return layer_in.transpose(0, 1), stack_layers(h_n), c_n

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dropout={self.dropout}")


class ForgetBiasMixin:
    """LSTM family: the forget-gate bias starts at ``forget_bias`` (Jozefowicz et al. 2015).

    As on the fused path: ``bias_ih[f] = forget_bias`` and ``bias_hh[f] = 0``, so the effective
    bias ``b_ih + b_hh`` of the forget gate equals the value.
    """

    uses_forget_bias = True
    #: the value when none is given (``forget_bias: null``), on the scratch and the fused path
    forget_bias: float = 1.0

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.set_forget_bias(self.forget_bias)

    @torch.no_grad()
    def set_forget_bias(self, value: float) -> None:
        self.forget_bias = value
        rows = self.gate_slice("f")
        for name, p in self.named_parameters():
            if name.startswith("bias_ih"):
                p[rows].fill_(value)
            elif name.startswith("bias_hh"):
                p[rows].zero_()


# ------------------------------------------------------------------------ helpers for recurrences
def stack_layers(states: list[Tensor]) -> Tensor:
    """``(L*D, B, W)`` from each layer and direction's final state: a view when there is one (a
    one-layer mLSTM's state is B x d^2 numbers, and copying it cost as much as its attention)."""
    return states[0].unsqueeze(0) if len(states) == 1 else torch.stack(states)


def input_projection(x: Tensor, w_ih: Tensor, bias: Tensor) -> Tensor:
    """``x W_ih^T + bias`` for every time step in one matmul: ``(T, B, I) -> (T, B, G*H)``."""
    T, B, I = x.shape
    return torch.addmm(bias, x.reshape(T * B, I), w_ih.t()).view(T, B, -1)


def padding_mask(x: Tensor, batch_sizes: Optional[Sequence[int]]) -> Optional[Tensor]:
    """``alive (T, B, 1)``: 1 where step t of row b is real (rows sorted by length, ``batch_sizes``
    of a packed sequence), 0 past its end; None when every row is full. A window-at-once
    recurrence multiplies its input (finite values past the ends) and its outputs by it."""
    if batch_sizes is None:
        return None
    T, B, _ = x.shape
    n = torch.tensor(list(batch_sizes), device=x.device).unsqueeze(1)
    return (torch.arange(B, device=x.device) < n).unsqueeze(2).to(x.dtype)


def final_state(seq: Tensor, last: Optional[Tensor]) -> Tensor:
    """State at each sequence's last step: ``seq[T-1]`` or ``seq[last[b], b]`` (a copy)."""
    if last is None:
        return seq[-1].clone()
    return seq[last, torch.arange(seq.shape[1], device=seq.device)]


def steps(T: int, B: int, batch_sizes: Optional[Sequence[int]]) -> list[int]:
    """Active rows per step: ``batch_sizes`` or ``B`` everywhere."""
    return [B] * T if batch_sizes is None else list(batch_sizes)


def rows(views: Sequence[Tensor], t: int, n: int, B: int) -> Tensor:
    """``views[t][:n]`` without the slice when every row is active."""
    v = views[t]
    return v if n == B else v[:n]


def new_buffer(like: Tensor, shape, padded: bool) -> Tensor:
    """Scratch buffer: zeros when rows can stay inactive (padding), else uninitialised."""
    return like.new_zeros(shape) if padded else like.new_empty(shape)


def recurrent_weight_grad(dgates: Tensor, y: Tensor, h0: Tensor) -> Tensor:
    """``sum_t dgates_t^T h_{t-1}`` as two matmuls over all steps (h_{-1} = h0, h_t = y[t])."""
    T = dgates.shape[0]
    G = dgates.shape[2]
    grad = torch.mm(dgates[0].t(), h0)
    if T > 1:
        grad.addmm_(dgates[1:].reshape(-1, G).t(), y[:-1].reshape(-1, y.shape[2]))
    return grad


def start_hidden_grad(dhT: Tensor, dY: Tensor, ns: Sequence[int]) -> Tensor:
    """Gradient w.r.t. h at the last step: ``dhT`` plus ``dy_{T-1}`` on the rows still active.
    Rows that ended earlier keep ``dhT`` untouched until the backward walk reaches their end."""
    dh = dhT.clone()
    dh[:ns[-1]] += dY[-1][:ns[-1]]
    return dh


def hidden_grad_step(dh: Tensor, dYs: Sequence[Tensor], dgates: Tensor, w_hh: Tensor, t: int,
                     ns: Sequence[int]) -> None:
    """``dh <- dgates_t W_hh + dy_{t-1}`` on the active rows: the gradient w.r.t. h_{t-1}."""
    n = ns[t]
    if t == 0:
        torch.mm(dgates, w_hh, out=dh[:n])
        return
    torch.addmm(dYs[t - 1][:n], dgates, w_hh, out=dh[:n])
    if ns[t - 1] > n:                                        # rows whose last step is t-1
        dh[n:ns[t - 1]] += dYs[t - 1][n:ns[t - 1]]


def projection_grads(dG: Tensor, x: Tensor, w_ih: Tensor,
                     need_dx: bool) -> tuple[Optional[Tensor], Tensor, Tensor]:
    """``dx, dW_ih, db`` of the input projection from the pre-activation gradients of all steps,
    each one matmul (or sum) over all ``T*B`` rows. Padding rows of ``dG`` are zero."""
    T, B, GH = dG.shape
    dG2 = dG.reshape(T * B, GH)
    dx = torch.mm(dG2, w_ih).view(x.shape) if need_dx else None
    return dx, torch.mm(dG2.t(), x.reshape(T * B, -1)), dG2.sum(0)


def all_grads(dG: Tensor, x: Tensor, w_ih: Tensor, y: Tensor, h0: Tensor,
              need_dx: bool) -> tuple[Optional[Tensor], Tensor, Tensor, Tensor]:
    """``dx, dW_ih, dW_hh, db`` when the same pre-activation gradients ``dG`` feed both weights:
    :func:`projection_grads` and :func:`recurrent_weight_grad`, each written in the weights' own
    (row-major) layout, so that no transposed copy of a weight-sized matrix is needed."""
    dx, dw_ih, db = projection_grads(dG, x, w_ih, need_dx)
    return dx, dw_ih, recurrent_weight_grad(dG, y, h0), db


# ------------------------------------------------------------------------ weight transfer
def _recurrent_parameters(module: nn.Module) -> dict[str, Tensor]:
    inner = getattr(module, "rnn", None)
    if isinstance(inner, nn.RNNBase):
        module = inner
    return dict(module.named_parameters())


@torch.no_grad()
def copy_weights(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Copy recurrent weights between any of ScratchStack, FusedStack, nn.RNN/LSTM/GRU.

    Names and shapes must match (``weight_ih_l0``, ``bias_hh_l1_reverse``...): rnn<->rnn,
    lstm<->lstm, gru<->gru. Returns ``dst``.
    """
    d, s = _recurrent_parameters(dst), _recurrent_parameters(src)
    if set(d) != set(s):
        raise ValueError(f"parameter names differ: {sorted(set(d) ^ set(s))}")
    for name, p in d.items():
        if p.shape != s[name].shape:
            raise ValueError(f"{name}: shape {tuple(p.shape)} != {tuple(s[name].shape)}")
        p.copy_(s[name])
    return dst


def load_fused_weights(scratch: ScratchStack, fused: nn.Module) -> ScratchStack:
    """Give a scratch stack the weights of a fused one (FusedStack or nn.RNN/LSTM/GRU)."""
    return copy_weights(scratch, fused)
