"""minGRU, minLSTM (Feng et al. 2024) and IndRNN (Li et al. 2018): the equations, the log-space
parallel scan against the step-by-step recurrence, state carry, padding, sizes, and a few training
steps of each cell in each kind of task through the real run path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SMOKE_LIMITS, SMOKE_TASKS, TINY, cli, compose_cfg
from seqbench.cells import build_stack, cell_class, count_parameters, detach_state, hidden_size_for
from seqbench.cells.minimal import LinearRecurrence, g, log_g, parallel_scan_log
from seqbench.errors import ConfigError
from seqbench.init import init_recurrent
from seqbench.metrics.gradients import gradient_flow

DT = torch.float64
MIN_CELLS = ["mingru", "minlstm"]
NEW_CELLS = [*MIN_CELLS, "indrnn"]
LENGTHS = torch.tensor([7, 3, 6, 1, 7])                     # B = 5, T = 7, unsorted

pytestmark = pytest.mark.usefixtures("one_thread")


def stack_of(cell, num_layers=1, bidirectional=False, input_size=3, hidden_size=4, seed=0, **kw):
    torch.manual_seed(seed)
    return build_stack(cell, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                       **kw).to(DT)


def twins(cell, mode="scan", **kw):
    """The same weights in ``mode`` and in sequential mode."""
    scan = stack_of(cell, mode=mode, **kw)
    seq = stack_of(cell, mode="sequential", **kw)
    seq.load_state_dict(scan.state_dict())
    return scan, seq


def outputs_and_grads(stack, x, state, lengths):
    out, final = stack(x, state, lengths)
    gen = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=DT)).sum() + 2 * final.square().sum()
    inputs = [x, *([state] if state is not None else []), *stack.parameters()]
    return [out, final, *torch.autograd.grad(loss, inputs)]


# ------------------------------------------------------------------ the equations
def test_g_and_log_g():
    x = torch.linspace(-30, 30, 601, dtype=DT)
    torch.testing.assert_close(g(x), torch.where(x >= 0, x + 0.5, torch.sigmoid(x)))
    torch.testing.assert_close(log_g(x), torch.log(g(x)))
    assert g(torch.zeros(1)).item() == 0.5 and torch.all(g(x) > 0)        # continuous at 0, positive


def test_parallel_scan_log_is_the_linear_recurrence():
    torch.manual_seed(0)
    T, B, H = 9, 3, 4
    a, b, h0 = torch.rand(T, B, H, dtype=DT) * 0.9 + 0.05, torch.rand(T, B, H, dtype=DT), torch.randn(B, H, dtype=DT)
    h, expected = h0, []
    for t in range(T):
        h = a[t] * h + b[t]
        expected.append(h)
    torch.testing.assert_close(parallel_scan_log(a.log(), b.log(), h0), torch.stack(expected))


def test_linear_recurrence_is_the_loop_and_its_backward_is_exact():
    """The loop mode's hand-written backward (the reverse recurrence G_t = dh_t + a_{t+1} G_{t+1})
    against finite differences and against autograd through the plain loop, with a broadcast h0."""
    torch.manual_seed(0)
    T, B, H = 6, 2, 3
    a = (torch.rand(T, B, H, dtype=DT) * 0.9 + 0.05).requires_grad_()
    b = torch.randn(T, B, H, dtype=DT, requires_grad=True)
    h0 = torch.randn(B, H, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(LinearRecurrence.apply, (a, b, h0))
    h, expected = h0, []
    for t in range(T):
        h = a[t] * h + b[t]
        expected.append(h)
    expected = torch.stack(expected)
    out = LinearRecurrence.apply(a, b, h0)
    torch.testing.assert_close(out, expected)
    w = torch.randn(T, B, H, dtype=DT)
    for u, v in zip(torch.autograd.grad((out * w).sum(), (a, b, h0)), torch.autograd.grad((expected * w).sum(), (a, b, h0))):
        torch.testing.assert_close(u, v)
    h0_row = torch.randn(1, H, dtype=DT, requires_grad=True)               # broadcast over the batch
    assert torch.autograd.gradcheck(LinearRecurrence.apply, (a, b, h0_row))


def test_auto_mode_is_the_loop_on_a_cpu(monkeypatch):
    """``mode=auto`` (the default) runs the loop on a CPU tensor: the scan is never called."""
    import seqbench.cells.minimal as minimal

    def no_scan(*args):
        raise AssertionError("the log-space scan ran on a CPU in mode=auto")

    monkeypatch.setattr(minimal, "parallel_scan_log", no_scan)
    stack = stack_of("mingru")
    assert stack.mode == "auto"
    loop = stack_of("mingru", mode="loop")
    x = torch.randn(2, 5, 3, dtype=DT)
    torch.testing.assert_close(stack(x)[0], loop(x)[0], atol=0, rtol=0)


def test_scan_gradcheck():
    """The scan's gradients (autograd through cumsum and logcumsumexp) against finite differences,
    w.r.t. the log coefficients and a signed initial state (float64)."""
    torch.manual_seed(0)
    log_a = (-F.softplus(torch.randn(5, 2, 3, dtype=DT))).requires_grad_()
    log_b = torch.randn(5, 2, 3, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(parallel_scan_log, (log_a, log_b, h0))


@pytest.mark.parametrize("mode", ["scan", "loop"])
@pytest.mark.parametrize("cell", MIN_CELLS)
def test_stack_gradcheck_through_the_scan(cell, mode):
    torch.manual_seed(0)
    stack = stack_of(cell, num_layers=2, bidirectional=True, input_size=2, hidden_size=2, mode=mode)
    names = [n for n, _ in stack.named_parameters()]
    x = torch.randn(3, 4, 2, dtype=DT, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=DT, requires_grad=True)

    def fn(x, h0, *params):
        return torch.func.functional_call(stack, dict(zip(names, params)), (x, h0, torch.tensor([4, 2, 3])))

    assert torch.autograd.gradcheck(fn, (x, h0, *stack.parameters()))


def test_mingru_step_follows_the_equations():
    stack = stack_of("mingru")
    x_t, h = torch.randn(5, 3, dtype=DT), torch.randn(5, 4, dtype=DT)
    h1, gates = stack.step(x_t, h)
    w, b = stack.layer_params(0)
    k_z, k_h = (x_t @ w.t() + b).split(4, 1)
    z = torch.sigmoid(k_z)
    torch.testing.assert_close(gates["z"], z)
    torch.testing.assert_close(h1, (1 - z) * h + z * torch.where(k_h >= 0, k_h + 0.5, torch.sigmoid(k_h)))


def test_minlstm_step_normalises_its_gates():
    stack = stack_of("minlstm")
    x_t, h = torch.randn(5, 3, dtype=DT), torch.randn(5, 4, dtype=DT)
    h1, gates = stack.step(x_t, h)
    w, b = stack.layer_params(0)
    k_f, k_i, k_h = (x_t @ w.t() + b).split(4, 1)
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
    torch.testing.assert_close(gates["f_norm"] + gates["i_norm"], torch.ones_like(f))
    torch.testing.assert_close(h1, f / (f + i) * h + i / (f + i) * g(k_h))


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_state_stays_positive_from_zeros(cell):
    """h_t is a convex (minLSTM) or gated (minGRU) mix of h_{t-1} and g(...) > 0: from h_0 = 0 the
    state is positive at every step, whatever the input."""
    out, h = stack_of(cell, num_layers=2, hidden_size=8)(torch.randn(4, 30, 3, dtype=DT) * 5)
    assert torch.all(out > 0) and torch.all(h > 0)


# ------------------------------------------------------------------ scan == sequential
@pytest.mark.parametrize("mode", ["scan", "loop"])
@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_scan_and_loop_equal_sequential(mode, cell, with_state, padded):
    """Outputs, final states and every gradient agree (float64), 2 layers, both directions."""
    scan, seq = twins(cell, mode, num_layers=2, bidirectional=True)
    x = torch.randn(5, 7, 3, dtype=DT, requires_grad=True)
    state = torch.randn(4, 5, 4, dtype=DT, requires_grad=True) if with_state else None
    lengths = LENGTHS if padded else None
    a, b = outputs_and_grads(scan, x, state, lengths), outputs_and_grads(seq, x, state, lengths)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-12, rtol=1e-10)
    if padded:
        for row, n in enumerate(LENGTHS.tolist()):
            assert torch.all(a[0][row, n:] == 0)


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_float32_scan_stays_close_over_a_long_window(cell):
    """Log space keeps the float32 scan within ~1e-4 of the loop over 300 steps."""
    torch.manual_seed(0)
    scan = build_stack(cell, 8, 16, num_layers=2, mode="scan")
    seq = build_stack(cell, 8, 16, num_layers=2, mode="sequential")
    seq.load_state_dict(scan.state_dict())
    x = torch.randn(4, 300, 8)
    torch.testing.assert_close(scan(x)[0], seq(x)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_carried_state_equals_one_long_window(cell):
    """Two truncated-BPTT windows with the detached state carried, and generation's one step at a
    time, both give what one long window gives."""
    stack = stack_of(cell, num_layers=2)
    x, h0 = torch.randn(2, 9, 3, dtype=DT), torch.randn(2, 2, 4, dtype=DT)
    out, final = stack(x, h0)
    out1, mid = stack(x[:, :4], h0)
    out2, final2 = stack(x[:, 4:], detach_state(mid))
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    torch.testing.assert_close(final2, final)
    state, steps = h0, []
    for t in range(9):
        y, state = stack(x[:, t:t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), out)
    torch.testing.assert_close(state, final)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_padded_rows_equal_each_sequence_alone(cell):
    stack = stack_of(cell, num_layers=2, bidirectional=True)
    x = torch.randn(5, 7, 3, dtype=DT)
    out, final = stack(x, lengths=LENGTHS)
    noisy = x.clone()
    for row, n in enumerate(LENGTHS.tolist()):
        noisy[row, n:] = 1e3                                 # garbage past the end changes nothing
    torch.testing.assert_close(stack(noisy, lengths=LENGTHS)[0], out)
    for row, n in enumerate(LENGTHS.tolist()):
        alone, final_alone = stack(x[row:row + 1, :n])
        torch.testing.assert_close(out[row:row + 1, :n], alone)
        torch.testing.assert_close(final[:, row:row + 1], final_alone)


@pytest.mark.parametrize("cell", NEW_CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (3, False), (2, True)])
def test_shapes(cell, num_layers, bidirectional):
    stack = stack_of(cell, num_layers=num_layers, bidirectional=bidirectional, hidden_size=5, dropout=0.3)
    D = 2 if bidirectional else 1
    out, h = stack.train()(torch.randn(4, 6, 3, dtype=DT), lengths=torch.tensor([6, 2, 5, 1]))
    assert out.shape == (4, 6, D * 5) == (4, 6, stack.output_size)
    assert h.shape == (num_layers * D, 4, 5) and not cell_class(cell).has_cell_state


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("cell,per_direction", [
    ("mingru", lambda n, H: 2 * (n * H + H)),
    ("minlstm", lambda n, H: 3 * (n * H + H)),
    ("indrnn", lambda n, H: n * H + 2 * H),
])
def test_closed_form_parameter_counts(cell, per_direction):
    I, H = 7, 5
    assert count_parameters(cell=cell, input_size=I, hidden_size=H) == per_direction(I, H)
    for L, D in [(1, 2), (3, 1), (2, 2)]:
        expected = sum(D * per_direction(I if k == 0 else D * H, H) for k in range(L))
        assert count_parameters(cell=cell, input_size=I, hidden_size=H, num_layers=L, bidirectional=D == 2) == expected


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_param_budget_sizes_the_new_cells(cell):
    h = hidden_size_for(30_000, cell=cell, input_size=32, num_layers=2)
    n = count_parameters(cell=cell, input_size=32, hidden_size=h, num_layers=2)
    assert abs(n - 30_000) <= 600
    assert build_stack(cell, 32, 8, num_layers=2, param_budget=30_000).hidden_size == h


# ------------------------------------------------------------------ IndRNN
def test_indrnn_step_and_the_bound_on_u():
    stack = stack_of("indrnn", magnitude=2.0, time_steps=10)
    bound = 2.0 ** 0.1
    assert stack.bound == pytest.approx(bound)
    assert torch.all((stack.weight_u_l0 >= 0) & (stack.weight_u_l0 <= 1))       # u ~ U(0, 1)
    with torch.no_grad():
        stack.weight_u_l0.copy_(torch.tensor([3.0, -3.0, 0.5, -0.5]))
    x_t, h = torch.randn(5, 3, dtype=DT), torch.randn(5, 4, dtype=DT)
    h1, _ = stack.step(x_t, h)
    u = torch.tensor([bound, -bound, 0.5, -0.5], dtype=DT)
    torch.testing.assert_close(h1, torch.relu(x_t @ stack.weight_ih_l0.t() + stack.bias_ih_l0 + u * h))
    free = stack_of("indrnn", time_steps=None)
    assert math.isinf(free.bound)


def test_indrnn_gradient_over_lags_is_the_bounded_u_to_the_lag():
    """One relu unit with positive weights and inputs stays linear: dL/dh_{T-1-lag} = u_eff^lag,
    with u_eff = min(u, magnitude^(1/T)): the bound is what caps the gradient's growth."""
    T = 12
    stack = build_stack("indrnn", 1, 1, magnitude=2.0, time_steps=T).to(DT)
    with torch.no_grad():
        stack.weight_ih_l0.fill_(1.0)
        stack.bias_ih_l0.zero_()
        stack.weight_u_l0.fill_(1.5)                         # beyond the bound 2^(1/12) ~ 1.059
    x = torch.rand(3, T, 1, dtype=DT, generator=torch.Generator().manual_seed(0)) + 0.1
    flow = gradient_flow(stack, x, lambda h: h.squeeze(-1))
    np.testing.assert_allclose(flow.h_norm, (2.0 ** (1 / T)) ** np.arange(T), rtol=1e-10)
    assert flow.h_norm[-1] == pytest.approx(2.0 ** ((T - 1) / T))   # at most 2 over the window


def test_indrnn_tanh_matches_its_reference_loop_and_bad_options_fail():
    stack = stack_of("indrnn", num_layers=2, bidirectional=True, nonlinearity="tanh")
    x, lengths = torch.randn(5, 7, 3, dtype=DT), LENGTHS
    fast = stack(x, lengths=lengths)
    stack.fast = False
    for a, b in zip(fast, stack(x, lengths=lengths)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match=r"^unknown model.nonlinearity 'gelu'; valid choices: relu, tanh$"):
        build_stack("indrnn", 3, 4, nonlinearity="gelu")
    with pytest.raises(ConfigError, match=r"^model.magnitude=0 must be > 0"):
        build_stack("indrnn", 3, 4, magnitude=0)
    with pytest.raises(ConfigError, match=r"^model.time_steps=0 must be an integer >= 1, or null"):
        build_stack("indrnn", 3, 4, time_steps=0)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_recurrent_init_schemes_refuse_cells_without_a_recurrent_matrix(cell):
    stack = build_stack(cell, 3, 4)
    assert init_recurrent(stack, "default") == 0
    with pytest.raises(ConfigError, match="^task.recurrent_init=orthogonal: the model has no recurrent matrix"):
        init_recurrent(stack, "orthogonal", 1.0)


# ------------------------------------------------------------------ validation and training
def test_validation_checks_the_cell_options(tmp_path):
    from seqbench.validate import validate

    validate(compose_cfg(["model=mingru", "model.mode=sequential"], root=tmp_path))
    with pytest.raises(ConfigError, match=r"^unknown model.mode 'parallel'; valid choices: auto, loop, scan, sequential$"):
        validate(compose_cfg(["model=minlstm", "model.mode=parallel"], root=tmp_path))
    with pytest.raises(ConfigError, match=r"^model.magnitude=-1.0 must be > 0"):
        validate(compose_cfg(["model=indrnn", "model.magnitude=-1.0"], root=tmp_path))


LIMITS, TASKS = SMOKE_LIMITS, SMOKE_TASKS


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_each_new_cell_trains_in_each_task(tmp_path, cell, task):
    """A few optimizer steps through ``seqbench.run.run`` (validation, data, the gradient probe, LM
    generation one token at a time with the carried state): finite losses."""
    from seqbench.run import run

    result = run(compose_cfg([*TASKS[task], f"model={cell}", *LIMITS], root=tmp_path))
    assert math.isfinite(result["train/loss"]) and math.isfinite(result["test/loss"]), result


def test_the_command_line_trains_a_mingru(tmp_path):
    p = cli("model=mingru", *TINY, *LIMITS, "task.probe=false", root=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "lm/synthetic/char/mingru/s0" in p.stdout
