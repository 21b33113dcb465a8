"""From-scratch cells: hand-written BPTT (gradcheck), padding, state carry, peephole and CIFG."""

from __future__ import annotations

import pytest
import torch

from seqbench.cells import (SCRATCH_CELLS, ScratchStack, build_stack, detach_state, fused_cells,
                            load_fused_weights)

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")
#: every registered cell built on the shared machinery (stacking, directions, padding, fast path)
CELLS = sorted(name for name, cls in SCRATCH_CELLS.items() if issubclass(cls, ScratchStack))


def scratch(cell, num_layers=1, bidirectional=False, input_size=3, hidden_size=4, **kw):
    return build_stack(cell, input_size, hidden_size, num_layers=num_layers,
                       bidirectional=bidirectional, impl="scratch", **kw).to(DT)


def tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def as_state(stack, tensors_):
    return tuple(tensors_) if stack.has_cell_state else tensors_[0]


def random_state(stack, batch):
    """N(0, 1) entries in the stack's state shapes (c may be wider than h: ``cell_state_size``)."""
    return as_state(stack, [torch.randn_like(s) for s in tensors(stack.initial_state(batch, dtype=DT))])


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("cell", CELLS + ["rnn-relu"])
def test_gradcheck(cell):
    """The custom backward against finite differences, with padding and an initial state,
    w.r.t. the input, the initial state and every parameter (float64). One direction: the
    reverse one runs the same Function on reversed inputs (checked in the tests below)."""
    torch.manual_seed(0)
    kw = {"nonlinearity": "relu"} if cell == "rnn-relu" else {}
    stack = scratch(cell.split("-")[0], input_size=2, hidden_size=3, **kw)
    names = [n for n, _ in stack.named_parameters()]
    lengths = torch.tensor([4, 2, 3])
    x = torch.randn(3, 4, 2, dtype=DT, requires_grad=True)
    state = [s.requires_grad_() for s in tensors(random_state(stack, 3))]

    def fn(x, *rest):
        st, params = rest[:len(state)], rest[len(state):]
        out, final = torch.func.functional_call(stack, dict(zip(names, params)),
                                                (x, as_state(stack, list(st)), lengths))
        return (out, *tensors(final))

    assert torch.autograd.gradcheck(fn, (x, *state, *stack.parameters()))


@pytest.mark.parametrize("cell", CELLS)
def test_fast_path_matches_reference_loop(cell):
    """Hand-written BPTT == the plain ``cell_step`` loop under autograd (2 layers, bi, padded)."""
    torch.manual_seed(0)
    stack = scratch(cell, num_layers=2, bidirectional=True)
    x = torch.randn(5, 6, 3, dtype=DT, requires_grad=True)
    state = [s.requires_grad_() for s in tensors(random_state(stack, 5))]
    lengths = torch.tensor([6, 2, 5, 1, 6])
    results = []
    for fast in (True, False):
        stack.fast = fast
        out, final = stack(x, as_state(stack, state), lengths)
        loss = out.sin().sum() + sum((f * (k + 2)).sum() for k, f in enumerate(tensors(final)))
        # materialised zeros where an input is unused (mLSTM never reads its initial h)
        grads = torch.autograd.grad(loss, [x, *state, *stack.parameters()], allow_unused=True,
                                    materialize_grads=True)
        results.append([out, *tensors(final), *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------ padding
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_equals_one_by_one(cell, bidirectional):
    """Each sequence of a padded batch gives what it gives alone: outputs (zeros past its end),
    final states and the gradients of its own loss. Garbage in the padding changes nothing."""
    torch.manual_seed(0)
    stack = scratch(cell, num_layers=2, bidirectional=bidirectional)
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, 3, dtype=DT)
    state = random_state(stack, 4)
    out, final = stack(x, state, lengths)
    x_noisy = x.clone()
    for b, n in enumerate(lengths):
        x_noisy[b, n:] = 1e3
    out_noisy, final_noisy = stack(x_noisy, state, lengths)
    torch.testing.assert_close(out_noisy, out)
    for b, n in enumerate(lengths.tolist()):
        alone = as_state(stack, [s[:, b:b + 1] for s in tensors(state)])
        out_b, final_b = stack(x[b:b + 1, :n], alone)
        torch.testing.assert_close(out[b:b + 1, :n], out_b)
        assert torch.all(out[b, n:] == 0)
        for s, s_b in zip(tensors(final), tensors(final_b)):
            torch.testing.assert_close(s[:, b:b + 1], s_b)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_gradients_equal_one_by_one(cell):
    torch.manual_seed(0)
    stack = scratch(cell, bidirectional=True)
    lengths = torch.tensor([2, 5, 4])
    x = torch.randn(3, 5, 3, dtype=DT)
    out, final = stack(x, lengths=lengths)
    loss = out.square().sum() + sum(s.sum() for s in tensors(final))
    batch_grads = torch.autograd.grad(loss, list(stack.parameters()))
    total = [torch.zeros_like(g) for g in batch_grads]
    for b, n in enumerate(lengths.tolist()):
        out_b, final_b = stack(x[b:b + 1, :n])
        loss_b = out_b.square().sum() + sum(s.sum() for s in tensors(final_b))
        for acc, g in zip(total, torch.autograd.grad(loss_b, list(stack.parameters()))):
            acc += g
    for g, ref in zip(batch_grads, total):
        torch.testing.assert_close(g, ref)


# ------------------------------------------------------------------ truncated BPTT carry
@pytest.mark.parametrize("cell,impl", [(c, "scratch") for c in CELLS] +
                         [(c, "fused") for c in fused_cells()])
def test_state_carry_across_windows(cell, impl):
    """Running T steps at once == two windows with the (detached) state carried, as the LM does."""
    torch.manual_seed(0)
    stack = build_stack(cell, 3, 4, num_layers=2, impl=impl).to(DT)
    x = torch.randn(2, 9, 3, dtype=DT)
    state = random_state(stack, 2)
    out, final = stack(x, state)
    out1, mid = stack(x[:, :4], state)
    out2, final2 = stack(x[:, 4:], detach_state(mid))
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    for a, b in zip(tensors(final2), tensors(final)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ peephole and CIFG
def assert_same_padded_forward(reference, stack):
    """Outputs and final (h, c) of two LSTM-family stacks agree on a padded batch (B3 T5 I3);
    returns both outputs for gradient checks."""
    x = torch.randn(3, 5, 3, dtype=DT)
    lengths = torch.tensor([5, 3, 4])
    out_r, (h_r, c_r) = reference(x, lengths=lengths)
    out_s, (h_s, c_s) = stack(x, lengths=lengths)
    for a, b in ((out_s, out_r), (h_s, h_r), (c_s, c_r)):
        torch.testing.assert_close(a, b)
    return out_r, out_s


def test_peephole_with_zero_peepholes_equals_lstm():
    torch.manual_seed(0)
    lstm = build_stack("lstm", 3, 4, num_layers=2, bidirectional=True, impl="fused").to(DT)
    peep = scratch("peephole", num_layers=2, bidirectional=True)
    with torch.no_grad():
        for name, p in peep.named_parameters():
            if name.startswith("weight_c"):
                p.zero_()
            else:
                p.copy_(dict(lstm.rnn.named_parameters())[name])
    out_l, out_p = assert_same_padded_forward(lstm, peep)
    out_l.sum().backward()
    out_p.sum().backward()
    for name, p in peep.named_parameters():
        if not name.startswith("weight_c"):
            torch.testing.assert_close(p.grad, dict(lstm.rnn.named_parameters())[name].grad)


def test_peepholes_matter_and_follow_the_equations():
    """Non-zero peepholes change the output; the step's gates obey Gers & Schmidhuber 2000."""
    torch.manual_seed(0)
    peep = scratch("peephole")
    x_t, h, c = (torch.randn(2, n, dtype=DT) for n in (3, 4, 4))
    (h1, c1), g = peep.step(x_t, (h, c))
    w_ih, w_hh, b_ih, b_hh, p_i, p_f, p_o = peep.layer_params(0)
    a = (x_t @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, 1)
    torch.testing.assert_close(g["i"], torch.sigmoid(a[0] + p_i * c))
    torch.testing.assert_close(g["f"], torch.sigmoid(a[1] + p_f * c))
    torch.testing.assert_close(g["o"], torch.sigmoid(a[3] + p_o * c1))    # o sees c_t
    torch.testing.assert_close(c1, g["f"] * c + g["i"] * torch.tanh(a[2]))
    torch.testing.assert_close(h1, g["o"] * torch.tanh(c1))
    with torch.no_grad():
        out, _ = peep(x_t.unsqueeze(1))
        peep.weight_co_l0.zero_()
        assert not torch.allclose(peep(x_t.unsqueeze(1))[0], out)


def test_cifg_input_gate_is_one_minus_forget():
    torch.manual_seed(0)
    cifg = scratch("cifg")
    _, gates = cifg.step(torch.randn(5, 3, dtype=DT), (torch.randn(5, 4, dtype=DT),) * 2)
    torch.testing.assert_close(gates["i"], 1 - gates["f"])
    assert cifg.weight_ih_l0.shape == (3 * 4, 3)                             # no input-gate rows


def test_cifg_equals_lstm_with_input_gate_tied_to_minus_forget():
    """i = 1 - sigma(a_f) = sigma(-a_f): an LSTM whose input-gate weights are the negated
    forget-gate weights computes exactly the CIFG (fast path checked against fused nn.LSTM)."""
    torch.manual_seed(0)
    cifg = scratch("cifg", num_layers=2, bidirectional=True)
    lstm = build_stack("lstm", 3, 4, num_layers=2, bidirectional=True, impl="fused").to(DT)
    H = 4
    with torch.no_grad():
        for name, p in lstm.rnn.named_parameters():
            f, g, o = getattr(cifg, name).split(H)                          # (f, g, o) blocks
            p.copy_(torch.cat([-f, f, g, o]))
    assert_same_padded_forward(lstm, cifg)


def test_load_fused_weights_into_scratch():
    fused = build_stack("lstm", 3, 4, num_layers=2, bidirectional=True, impl="fused")
    mine = load_fused_weights(build_stack("lstm", 3, 4, num_layers=2, bidirectional=True,
                                          impl="scratch"), fused.rnn)
    for name, p in fused.rnn.named_parameters():
        assert torch.equal(getattr(mine, name), p)


def test_new_cell_needs_only_a_class(monkeypatch):
    """The extension path: one registered ScratchStack subclass with a ``cell_step`` is buildable
    by name, stacks, runs both directions and padded batches (via the reference loop)."""
    from seqbench.cells import SCRATCH_CELLS, register_scratch, resolve_impl
    from seqbench.cells.scratch import ScratchStack

    monkeypatch.setitem(SCRATCH_CELLS, "_toy", None)               # removed again after the test

    @register_scratch("_toy")
    class Toy(ScratchStack):
        """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), written as a new cell."""
        gates = ("h",)

        def cell_step(self, x_t, h, params):
            w_ih, w_hh, b_ih, b_hh = params
            h = torch.tanh(x_t @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh)
            return h, {"h": h}

    assert resolve_impl("_toy", "auto") == "scratch"
    toy = build_stack("_toy", 3, 4, num_layers=2, bidirectional=True).to(DT)
    rnn = load_fused_weights(build_stack("rnn", 3, 4, num_layers=2, bidirectional=True,
                                         impl="scratch").to(DT), toy)
    x, lengths = torch.randn(3, 5, 3, dtype=DT), torch.tensor([5, 2, 4])
    torch.testing.assert_close(toy(x, lengths=lengths)[0], rnn(x, lengths=lengths)[0])
