"""xLSTM's sLSTM and mLSTM (Beck et al. 2024): the equations against a plain unstabilised loop, the
stabiliser (outputs independent of m; finite where the plain exp overflows), mLSTM's parallel form
against its recurrence, the packed state through carry, beam re-ordering and padding, sizes, and a
few training steps of each cell in each kind of task through the real run path."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import SMOKE_LIMITS, SMOKE_TASKS, compose_cfg
from seqbench.cells import (build_stack, cell_class, copy_weights, count_parameters, detach_state, hidden_size_for,
                            select_state)
from seqbench.cells.xlstm import normalised
from seqbench.errors import ConfigError
from seqbench.init import init_recurrent
from seqbench.tasks.classify import top_layer_final

DT = torch.float64
CELLS = ["slstm", "mlstm"]
#: every way the two cells run: sLSTM (exp and sigmoid forget gate), mLSTM (both modes, 1 and 2 heads)
VARIANTS = [("slstm", {}), ("slstm", {"forget_gate": "sigmoid"}), ("mlstm", {"mode": "parallel"}),
            ("mlstm", {"mode": "sequential"}), ("mlstm", {"mode": "parallel", "num_heads": 2}),
            ("mlstm", {"mode": "sequential", "num_heads": 2})]
LENGTHS = torch.tensor([7, 3, 6, 1, 7])                     # B = 5, T = 7, unsorted

pytestmark = pytest.mark.usefixtures("one_thread")


def stack_of(cell, num_layers=1, bidirectional=False, input_size=3, hidden_size=4, seed=0, **kw):
    torch.manual_seed(seed)
    return build_stack(cell, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                       **kw).to(DT)


def valid_state(stack, batch, seed=1):
    """A state the cell can reach: the final state of a random warm-up window from a random h."""
    gen = torch.Generator().manual_seed(seed)
    h, c = stack.initial_state(batch, dtype=DT)
    x = torch.randn(batch, 5, stack.input_size, generator=gen, dtype=DT)
    with torch.no_grad():
        _, state = stack(x, (torch.randn(h.shape, generator=gen, dtype=DT), c))
    return state


def ids(variant):
    cell, kw = variant
    return "-".join([cell, *map(str, kw.values())])


# ------------------------------------------------------------------ the equations, unstabilised
def plain_slstm(stack, x, exp_forget=True):
    """The paper's sLSTM without the stabiliser (true exp gates), one layer, from zeros."""
    w_ih, w_hh, b_ih, b_hh = stack.layer_params(0)
    B, T, _ = x.shape
    h = c = n = x.new_zeros(B, stack.hidden_size)
    out = []
    for t in range(T):
        i_pre, f_pre, z_pre, o_pre = (x[:, t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, 1)
        i, f = torch.exp(i_pre), torch.exp(f_pre) if exp_forget else torch.sigmoid(f_pre)
        c = f * c + i * torch.tanh(z_pre)
        n = f * n + i
        h = torch.sigmoid(o_pre) * c / n
        out.append(h)
    return torch.stack(out, 1)


def plain_mlstm(stack, x):
    """The paper's mLSTM without the stabiliser: C_t = f C + i v k^T, h = o C q / max(|n.q|, 1)."""
    w, b = stack.layer_params(0)
    B, T, _ = x.shape
    H, NH, d = stack.hidden_size, stack.num_heads, stack.head_size
    C, n = x.new_zeros(B, NH, d, d), x.new_zeros(B, NH, d)
    out = []
    for t in range(T):
        q, k, v, o, i_pre, f_pre = (x[:, t] @ w.t() + b).split([H, H, H, H, NH, NH], 1)
        q, k, v = q.view(B, NH, d), k.view(B, NH, d) / math.sqrt(d), v.view(B, NH, d)
        i, f = torch.exp(i_pre), torch.sigmoid(f_pre)
        C = f[..., None, None] * C + i[..., None, None] * torch.einsum("bhd,bhe->bhde", v, k)
        n = f[..., None] * n + i[..., None] * k
        num = torch.einsum("bhde,bhe->bhd", C, q)
        den = torch.clamp((n * q).sum(-1).abs(), min=1.0)
        out.append(torch.sigmoid(o) * (num / den[..., None]).reshape(B, H))
    return torch.stack(out, 1)


@pytest.mark.parametrize("forget_gate", ["exp", "sigmoid"])
def test_slstm_is_the_plain_exponential_lstm(forget_gate):
    stack = stack_of("slstm", hidden_size=5, forget_gate=forget_gate)
    x = torch.randn(4, 12, 3, dtype=DT)
    torch.testing.assert_close(stack(x)[0], plain_slstm(stack, x, forget_gate == "exp"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("num_heads", [1, 2])
def test_mlstm_is_the_plain_matrix_memory(mode, num_heads):
    stack = stack_of("mlstm", hidden_size=6, mode=mode, num_heads=num_heads)
    x = torch.randn(4, 12, 3, dtype=DT)
    torch.testing.assert_close(stack(x)[0], plain_mlstm(stack, x), rtol=1e-10, atol=1e-12)


def test_step_gates_and_the_stabiliser_bound():
    """Stabilised gates are <= 1 with one of them = 1 at every step; an empty memory starts at
    m = i~ (n = 1), as the reference's first step."""
    stack = stack_of("slstm", hidden_size=5)
    x_t = torch.randn(6, 3, dtype=DT) * 4
    (h, packed), g = stack.step(x_t)
    w_ih, _, b_ih, b_hh = stack.layer_params(0)
    i_pre = (x_t @ w_ih.t() + b_ih + b_hh)[:, :5]
    torch.testing.assert_close(g["m"], i_pre)
    torch.testing.assert_close(g["n"], torch.ones_like(h))
    for _ in range(5):
        (h, packed), g = stack.step(torch.randn(6, 3, dtype=DT) * 4, (h, packed))
        assert torch.all(g["i"] <= 1) and torch.all(g["f"] <= 1)
        assert torch.all((g["i"] == 1) | (g["f"] == 1))
    assert packed.shape == (6, 3 * 5) and stack.cell_state_size == 15


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_outputs_do_not_depend_on_the_stabiliser(variant):
    """(c, n, m) and (c e^-s, n e^-s, m + s) are the same memory: the same outputs follow."""
    cell, kw = variant
    stack = stack_of(cell, num_layers=2, hidden_size=4, **kw)
    h, packed = valid_state(stack, 3)
    W = stack.cell_state_size
    n_m = stack.num_heads if cell == "mlstm" else 4                  # the m entries: the last ones
    shift = torch.rand(*packed.shape[:2], n_m, dtype=DT) * 3
    if cell == "slstm":
        scale = torch.cat([torch.exp(-shift)] * 2 + [torch.ones_like(shift)], 2)
    else:
        d = stack.head_size
        scale = torch.cat([torch.exp(-shift).repeat_interleave(d * d, 2), torch.exp(-shift).repeat_interleave(d, 2),
                           torch.ones_like(shift)], 2)
    moved = packed * scale + torch.cat([torch.zeros(*packed.shape[:2], W - n_m, dtype=DT), shift], 2)
    x = torch.randn(3, 6, 3, dtype=DT)
    torch.testing.assert_close(stack(x, (h, moved))[0], stack(x, (h, packed))[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_large_preactivations_stay_finite(variant):
    """Inputs x 200 drive the gate pre-activations to hundreds: the plain exp overflows (float32),
    the stabilised cells give finite outputs, states and gradients."""
    cell, kw = variant
    torch.manual_seed(0)
    stack = build_stack(cell, 3, 8, num_layers=2, **kw)
    x = (torch.randn(4, 30, 3) * 200).requires_grad_()
    out, (h, c) = stack(x)
    assert torch.isfinite(out).all() and torch.isfinite(h).all() and torch.isfinite(c).all()
    (out.square().sum() + h.sum() + c.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in stack.parameters())
    plain = plain_slstm(stack, x.detach()) if cell == "slstm" else plain_mlstm(stack, x.detach())
    assert not torch.isfinite(plain).all()                           # what the stabiliser prevents


def test_normaliser_is_the_papers_without_overflow():
    """num / max(|n.q|, exp(-m)) as written (float64, moderate m), and finite with finite gradients
    in float32 where exp(-m) itself overflows (m = -200: a long run of closed gates)."""
    num, dot = torch.randn(7, 3, dtype=DT), torch.randn(7, dtype=DT) * 0.01
    m = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0, 6.0, 20.0], dtype=DT)
    expected = num / torch.maximum(dot.abs(), torch.exp(-m)).unsqueeze(-1)
    torch.testing.assert_close(normalised(num, dot, m), expected, rtol=1e-14, atol=0)
    m32 = torch.tensor([-200.0, 200.0], requires_grad=True)
    dot32 = torch.tensor([0.5, 0.0], requires_grad=True)
    out = normalised(torch.ones(2, 3), dot32, m32)
    out.sum().backward()
    assert torch.all(out[0] == 0) and torch.isfinite(out).all()
    assert torch.isfinite(m32.grad).all() and torch.isfinite(dot32.grad).all()


# ------------------------------------------------------------------ mLSTM: parallel == sequential
def outputs_and_grads(stack, x, state, lengths):
    out, (h, c) = stack(x, state, lengths)
    gen = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=DT)).sum() + 2 * h.square().sum() \
        + (c * torch.randn(c.shape, generator=gen, dtype=DT)).sum()
    inputs = [x, *([state[1]] if state is not None else []), *stack.parameters()]
    return [out, h, c, *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_parallel_equals_sequential(num_heads, with_state, padded):
    """Outputs, final (h, C, n, m) and every gradient agree (float64), 2 layers, both directions,
    with the carried state inside the parallel form."""
    par = stack_of("mlstm", num_layers=2, bidirectional=True, mode="parallel", num_heads=num_heads)
    seq = stack_of("mlstm", num_layers=2, bidirectional=True, mode="sequential", num_heads=num_heads)
    seq.load_state_dict(par.state_dict())
    x = torch.randn(5, 7, 3, dtype=DT, requires_grad=True)
    state = None
    if with_state:
        h, c = valid_state(par, 5)
        state = (h, c.clone().requires_grad_())
    lengths = LENGTHS if padded else None
    a, b = outputs_and_grads(par, x, state, lengths), outputs_and_grads(seq, x, state, lengths)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, atol=1e-12, rtol=1e-10)
    if padded:
        for row, n in enumerate(LENGTHS.tolist()):
            assert torch.all(a[0][row, n:] == 0)


def test_float32_parallel_stays_close_over_a_long_window():
    torch.manual_seed(0)
    par = build_stack("mlstm", 8, 16, num_layers=2, mode="parallel")
    seq = build_stack("mlstm", 8, 16, num_layers=2, mode="sequential")
    seq.load_state_dict(par.state_dict())
    x = torch.randn(4, 200, 8)
    torch.testing.assert_close(par(x)[0], seq(x)[0], atol=1e-4, rtol=1e-4)


def test_mlstm_never_reads_its_initial_h():
    stack = stack_of("mlstm", num_layers=2)
    h, c = valid_state(stack, 3)
    x = torch.randn(3, 5, 3, dtype=DT)
    torch.testing.assert_close(stack(x, (torch.randn_like(h), c))[0], stack(x, (h, c))[0], rtol=0, atol=0)
    assert not cell_class("mlstm").output_feeds_back and cell_class("slstm").output_feeds_back


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_a_fresh_mlstm_state_reaches_the_cell_as_none_and_equals_zeros(mode, monkeypatch):
    """Without a state, every layer and direction's recurrence gets ``c0=None`` (no B x d^2 zero
    memory allocated and scanned), and outputs, final state and gradients are exactly those of an
    explicit zero state."""
    stack = stack_of("mlstm", num_layers=2, bidirectional=True, mode=mode)
    seen, recurrence = [], type(stack).recurrence

    def spy(self, x, params, h0, c0, *rest):
        seen.append(c0)
        return recurrence(self, x, params, h0, c0, *rest)

    monkeypatch.setattr(type(stack), "recurrence", spy)
    x = torch.randn(5, 7, 3, dtype=DT, requires_grad=True)

    def run(state):
        out, (h, c) = stack(x, state, LENGTHS)
        loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=DT)).sum() + h.square().sum() + c.square().sum()
        return [out, h, c, *torch.autograd.grad(loss, [x, *stack.parameters()])]

    fresh = run(None)
    assert len(seen) == 4 and all(c0 is None for c0 in seen)
    zero = run(stack.initial_state(5, dtype=DT))
    assert all(c0 is not None for c0 in seen[4:])
    for u, v in zip(fresh, zero, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


# ------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("variant", VARIANTS[:4], ids=ids)
def test_gradcheck(variant):
    """Autograd through the steps (and the parallel form) against finite differences, w.r.t. the
    input, the initial state (a reachable one: n > 0) and every parameter; 2 layers, padded."""
    cell, kw = variant
    stack = stack_of(cell, num_layers=2, input_size=2, hidden_size=2, **kw)
    names = [n for n, _ in stack.named_parameters()]
    x = torch.randn(3, 4, 2, dtype=DT, requires_grad=True)
    h0, c0 = (s.clone().requires_grad_() for s in valid_state(stack, 3))

    def fn(x, h0, c0, *params):
        lengths = torch.tensor([4, 2, 3])
        out, (h, c) = torch.func.functional_call(stack, dict(zip(names, params)), (x, (h0, c0), lengths))
        return out, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *stack.parameters()))


# ------------------------------------------------------------------ the packed state
@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_carried_state_equals_one_long_window(variant):
    """Two truncated-BPTT windows with the detached state carried, and generation's one step at a
    time, both give what one long window gives."""
    cell, kw = variant
    stack = stack_of(cell, num_layers=2, **kw)
    x, state0 = torch.randn(2, 9, 3, dtype=DT), valid_state(stack, 2)
    out, final = stack(x, state0)
    out1, mid = stack(x[:, :4], state0)
    out2, final2 = stack(x[:, 4:], detach_state(mid))
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    for a, b in zip(final2, final, strict=True):
        torch.testing.assert_close(a, b)
    state, steps = state0, []
    for t in range(9):
        y, state = stack(x[:, t:t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), out)
    for a, b in zip(state, final, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_state_layout_and_what_readers_see(cell):
    """(h, c) of (L*D, B, H) and (L*D, B, cell_state_size); beam search's re-ordering (dim 1)
    picks whole memories; the classifier reads the top layer's h."""
    stack = stack_of(cell, num_layers=2, bidirectional=True, hidden_size=4)
    width = {"slstm": 3 * 4, "mlstm": 4 * 4 + 4 + 1}[cell]
    assert stack.cell_state_size == width
    h0, c0 = stack.initial_state(5, dtype=DT)
    assert h0.shape == (4, 5, 4) and c0.shape == (4, 5, width) and not c0.any()
    x = torch.randn(5, 6, 3, dtype=DT)
    out, (h, c) = stack(x)
    assert h.shape == (4, 5, 4) and c.shape == (4, 5, width)
    top = top_layer_final((h, c), 2, 2)
    torch.testing.assert_close(top, torch.cat([out[:, -1, :4], out[:, 0, 4:]], 1))
    rows = torch.tensor([3, 3, 0])
    beams = select_state((h, c), rows)
    nxt = torch.randn(3, 2, 3, dtype=DT)
    uni = stack_of(cell, num_layers=2, hidden_size=4)
    _, (hu, cu) = uni(x)
    picked = uni(nxt, select_state((hu, cu), rows))
    alone = uni(torch.cat([x[rows], nxt], 1))
    torch.testing.assert_close(picked[0], alone[0][:, 6:])
    assert beams[1].shape == (4, 3, width)


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_padded_rows_equal_each_sequence_alone(variant):
    cell, kw = variant
    stack = stack_of(cell, num_layers=2, bidirectional=True, **kw)
    x = torch.randn(5, 7, 3, dtype=DT)
    state = valid_state(stack, 5)
    out, final = stack(x, state, lengths=LENGTHS)
    noisy = x.clone()
    for row, n in enumerate(LENGTHS.tolist()):
        noisy[row, n:] = 1e3                                 # garbage past the end changes nothing
    torch.testing.assert_close(stack(noisy, state, lengths=LENGTHS)[0], out)
    for row, n in enumerate(LENGTHS.tolist()):
        alone, final_alone = stack(x[row:row + 1, :n], tuple(s[:, row:row + 1] for s in state))
        torch.testing.assert_close(out[row:row + 1, :n], alone)
        assert torch.all(out[row, n:] == 0)
        for a, b in zip(final, final_alone, strict=True):
            torch.testing.assert_close(a[:, row:row + 1], b)


# ------------------------------------------------------------------ sizes and options
@pytest.mark.parametrize("cell,kw,per_direction", [
    ("slstm", {}, lambda n, H: 4 * H * (n + H) + 2 * 4 * H),       # torch's LSTM layout
    ("mlstm", {}, lambda n, H: (4 * H + 2) * (n + 1)),              # W_q,k,v,o + w_i,f and biases
    ("mlstm", {"num_heads": 5}, lambda n, H: (4 * H + 2 * 5) * (n + 1)),
])
def test_closed_form_parameter_counts(cell, kw, per_direction):
    I, H = 7, 5
    assert count_parameters(cell=cell, input_size=I, hidden_size=H, **kw) == per_direction(I, H)
    for L, D in [(1, 2), (3, 1), (2, 2)]:
        expected = sum(D * per_direction(I if k == 0 else D * H, H) for k in range(L))
        assert count_parameters(cell=cell, input_size=I, hidden_size=H, num_layers=L, bidirectional=D == 2,
                                **kw) == expected


@pytest.mark.parametrize("cell", CELLS)
def test_param_budget_sizes_both_cells(cell):
    h = hidden_size_for(30_000, cell=cell, input_size=32, num_layers=2)
    n = count_parameters(cell=cell, input_size=32, hidden_size=h, num_layers=2)
    assert abs(n - 30_000) <= 600
    assert build_stack(cell, 32, 8, num_layers=2, param_budget=30_000).hidden_size == h


def test_init_and_recurrent_schemes():
    """mLSTM's forget bias starts at linspace(3, 6) over the heads (the reference's); sLSTM has
    torch's LSTM layout, its R is ``weight_hh``: the recurrent init schemes set its gate blocks."""
    m = build_stack("mlstm", 3, 8, num_heads=4, bidirectional=True)
    for name in ("bias_l0", "bias_l0_reverse"):
        torch.testing.assert_close(getattr(m, name)[-4:], torch.linspace(3.0, 6.0, 4))
    with pytest.raises(ConfigError, match="^task.recurrent_init=orthogonal: the model has no recurrent matrix"):
        init_recurrent(m, "orthogonal", 1.0)
    s = build_stack("slstm", 3, 6, num_layers=2)
    lstm = torch.nn.LSTM(3, 6, 2)
    copy_weights(s, lstm)                                            # torch's LSTM names and shapes
    assert torch.equal(s.weight_hh_l1, lstm.weight_hh_l1)
    assert init_recurrent(s, "orthogonal", 1.0) == 2 * 4
    q = s.weight_hh_l1[6:12].detach().double()
    torch.testing.assert_close(q @ q.t(), torch.eye(6, dtype=DT), atol=1e-6, rtol=0)


def test_bad_options_are_one_line_config_errors(tmp_path):
    from seqbench.validate import validate

    with pytest.raises(ConfigError, match=r"^unknown model.mode 'scan'; valid choices: parallel, sequential$"):
        build_stack("mlstm", 3, 4, mode="scan")
    with pytest.raises(ConfigError, match=r"^unknown model.forget_gate 'tanh'; valid choices: exp, sigmoid$"):
        build_stack("slstm", 3, 4, forget_gate="tanh")
    with pytest.raises(ConfigError, match=r"^model.hidden_size=6 must be a multiple of model.num_heads=4 \(with"):
        build_stack("mlstm", 3, 6, num_heads=4)
    with pytest.raises(ConfigError, match=r"^model.num_heads=0 must be an integer >= 1$"):
        build_stack("mlstm", 3, 4, num_heads=0)
    validate(compose_cfg(["model=mlstm", "model.mode=sequential", "model.hidden_size=8", "model.num_heads=2"],
                         root=tmp_path))
    with pytest.raises(ConfigError, match=r"^unknown model.forget_gate 'relu'"):
        validate(compose_cfg(["model=slstm", "model.forget_gate=relu"], root=tmp_path))


# ------------------------------------------------------------------ training through the run path
LIMITS = SMOKE_LIMITS
TASKS = {**SMOKE_TASKS, "lm": [*SMOKE_TASKS["lm"], "decoding=beam"]}  # beam search re-orders the packed states


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_trains_in_each_task(tmp_path, cell, task):
    """A few optimizer steps through ``seqbench.run.run`` (validation, data, truncated BPTT, the
    gradient probe, LM beam-search generation one token at a time with the packed states carried
    and re-ordered): finite losses."""
    from seqbench.run import run

    result = run(compose_cfg([*TASKS[task], f"model={cell}", *LIMITS], root=tmp_path))
    assert math.isfinite(result["train/loss"]) and math.isfinite(result["test/loss"]), result


@pytest.mark.parametrize("forget_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("bidirectional, padded", [(False, False), (False, True), (True, True)])
def test_slstm_hand_written_backward_equals_the_reference_under_autograd(forget_gate, bidirectional, padded):
    """The fast path (SLSTMRecurrence: its own BPTT through the stabiliser and the normaliser)
    against ``cell_step`` in a loop under autograd: outputs, final state and every gradient, in
    float64, two layers, from a reachable state, with padded rows."""
    stack = stack_of("slstm", num_layers=2, bidirectional=bidirectional, hidden_size=5, forget_gate=forget_gate)
    x = torch.randn(5, 7, 3, dtype=DT, requires_grad=True)
    h0, c0 = (s.clone().requires_grad_() for s in valid_state(stack, 5))
    weights = torch.linspace(-1.0, 1.0, 3 * 5, dtype=DT)
    results = {}
    for fast in (True, False):
        stack.fast = fast
        for t in (x, h0, c0, *stack.parameters()):
            t.grad = None
        y, (h, c) = stack(x, (h0, c0), LENGTHS if padded else None)
        (y.sum(-1).pow(2).sum() + h.pow(2).sum() + (c * weights).sum()).backward()  # every part of c: c, n and m
        results[fast] = [y, h, c, x.grad, h0.grad, c0.grad, *(p.grad for p in stack.parameters())]
    for got, want in zip(results[True], results[False]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
