"""Gradient-flow probe (seqbench.metrics.gradients) and recurrent-weight init (seqbench.init).

The probe is checked against a hand-derived value: for the linear scalar recurrence
s_t = w s_{t-1} + u x_t and L = s_{T-1}, dL/ds_t = w^(T-1-t) (seed 002's example)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from seqbench.cells import RecurrentStack, available_cells, build_stack, cell_class, fused_cells, resolve_impl
from seqbench.errors import ConfigError
from seqbench.init import init_recurrent, recurrent_weights, spectral_radius
from seqbench.metrics.gradients import GradientFlow, gradient_flow, plot_flows

DT = torch.float64


class LinearScalarRNN(RecurrentStack):
    """s_t = w s_{t-1} + u x_t: one unit, identity activation (a RecurrentStack written plainly)."""

    def __init__(self, w: float, u: float = 1.0):
        super().__init__(input_size=1, hidden_size=1)
        self.w = nn.Parameter(torch.tensor(w, dtype=DT))
        self.u = nn.Parameter(torch.tensor(u, dtype=DT))

    def forward(self, x, state=None, lengths=None):
        s = x.new_zeros(1, x.shape[0], 1) if state is None else state
        outputs = []
        for t in range(x.shape[1]):
            s = self.w * s + self.u * x[:, t].unsqueeze(0)
            outputs.append(s[-1])
        return torch.stack(outputs, 1), s


@pytest.mark.parametrize("w", [0.5, 0.9, 1.0, 1.3])
def test_probe_matches_w_to_the_lag_on_a_linear_scalar_rnn(w):
    T, B = 12, 5
    x = torch.randn(B, T, 1, dtype=DT, generator=torch.Generator().manual_seed(0))
    flow = gradient_flow(LinearScalarRNN(w), x, lambda h: h.squeeze(-1))   # L_b = s_{T-1}
    np.testing.assert_allclose(flow.h_norm, w ** np.arange(T), rtol=1e-12)
    assert flow.c_norm is None and list(flow.lags) == list(range(T))


@pytest.mark.parametrize("impl", ["fused", "scratch"])
def test_probe_is_exact_for_the_project_rnn_in_its_linear_regime(impl):
    """A 1-unit relu RNN with positive weights and inputs never leaves relu's linear part, so the
    real cell (torch's kernel or the hand-written BPTT) must give exactly w^lag too."""
    w, T = 0.8, 15
    stack = build_stack("rnn", 1, 1, impl=impl, nonlinearity="relu").to(DT)
    with torch.no_grad():
        for name, p in stack.named_parameters():
            p.fill_(w if "weight_hh" in name else 1.0 if "weight_ih" in name else 0.0)
    x = torch.rand(4, T, 1, dtype=DT, generator=torch.Generator().manual_seed(1)) + 0.1
    flow = gradient_flow(stack, x, lambda h: h.squeeze(-1))
    np.testing.assert_allclose(flow.h_norm, w ** np.arange(T), rtol=1e-10)


def _pairs():
    """Every (cell, impl) the registry can build (resolve_impl refuses e.g. a fused peephole)."""
    out = []
    for cell in available_cells():
        if not cell_class(cell).carries_state:  # no recurrence (boe): no gradient flows through a state
            continue
        for impl in ("fused", "scratch"):
            try:
                resolve_impl(cell, impl)
            except ConfigError:
                continue
            out.append((cell, impl))
    return out


@pytest.mark.parametrize("cell,impl", _pairs())
def test_probe_returns_every_lag_and_c_norms_for_the_lstm_family_only(cell, impl):
    torch.manual_seed(0)
    T, B, H = 9, 3, 5
    stack = build_stack(cell, 2, H, num_layers=2, impl=impl).to(DT).train()
    head = nn.Linear(H, 1).to(DT)
    x = torch.randn(B, T, 2, dtype=DT)
    before = {n: p.grad for n, p in stack.named_parameters()}
    flow = gradient_flow(stack, x, lambda h: head(h).squeeze(-1) ** 2)
    assert len(flow.h_norm) == T and np.all(np.isfinite(flow.h_norm)) and flow.h_norm[0] > 0
    if cell_class(cell).output_feeds_back:
        assert np.all(flow.h_norm > 0)
    else:                                                            # mLSTM: h_t is read out, never fed back
        assert np.all(flow.h_norm[1:] == 0)
    if cell_class(cell).has_cell_state:                              # the LSTM family
        assert len(flow.c_norm) == T and math.isnan(flow.c_norm[0])   # c_{T-1} is never carried
        assert np.all(np.isfinite(flow.c_norm[1:])) and np.all(flow.c_norm[1:] > 0)
    else:
        assert flow.c_norm is None
    assert stack.training and all(p.grad is before[n] for n, p in stack.named_parameters())


def test_probe_agrees_between_fused_and_scratch_lstm():
    from seqbench.cells import copy_weights

    torch.manual_seed(0)
    fused, scratch = build_stack("lstm", 3, 4, impl="fused").to(DT), build_stack("lstm", 3, 4, impl="scratch").to(DT)
    copy_weights(fused, scratch)
    x = torch.randn(2, 7, 3, dtype=DT)
    a, b = (gradient_flow(s, x, lambda h: h.sum(1)) for s in (fused, scratch))
    np.testing.assert_allclose(a.h_norm, b.h_norm, rtol=1e-9)
    np.testing.assert_allclose(a.c_norm[1:], b.c_norm[1:], rtol=1e-9)


def test_probe_refuses_a_bidirectional_stack():
    with pytest.raises(ValueError, match="unidirectional"):
        gradient_flow(build_stack("gru", 2, 3, bidirectional=True), torch.randn(1, 4, 2), lambda h: h.sum(1))


def test_scaled_recurrent_weights_explode_and_default_ones_vanish():
    """The seeds' claim in one picture: a tanh RNN whose W_hh has spectral radius 3 carries a
    growing gradient back in time; torch's default init (radius < 1) a vanishing one."""
    x = torch.randn(8, 40, 2, generator=torch.Generator().manual_seed(0))
    curves = {}
    for scheme, scale in (("default", 1.0), ("scaled", 3.0)):
        torch.manual_seed(0)
        stack = build_stack("rnn", 2, 32)
        init_recurrent(stack, scheme, scale)
        curves[scheme] = gradient_flow(stack, x, lambda h: h.sum(1)).h_norm
    assert curves["default"][-1] < 1e-6 * curves["default"][0]
    assert curves["scaled"][-1] > 100 * curves["scaled"][0]


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", fused_cells())
def test_recurrent_init_schemes(cell, impl):
    stack = build_stack(cell, 3, 6, num_layers=2, impl=impl)
    H = 6
    blocks = lambda: [w[k * H:(k + 1) * H].detach() for _, w in recurrent_weights(stack)
                      for k in range(w.shape[0] // H)]
    assert len(recurrent_weights(stack)) == 2
    init_recurrent(stack, "orthogonal", 0.9)
    for b in blocks():
        torch.testing.assert_close(b @ b.T, 0.81 * torch.eye(H), atol=1e-5, rtol=0)
    init_recurrent(stack, "identity", 1.0)
    assert all(torch.equal(b, torch.eye(H)) for b in blocks())
    torch.manual_seed(0)
    stack = build_stack(cell, 3, 6, impl=impl)
    before = [b.clone() for b in blocks()]
    assert init_recurrent(stack, "default") == 0 and all(torch.equal(a, b) for a, b in zip(before, blocks()))
    init_recurrent(stack, "scaled", 1.5)
    assert spectral_radius(stack) == pytest.approx(1.5, rel=1e-4)
    for a, b in zip(before, blocks()):  # a rescaled copy of the default init
        ratio = (b / a)[a.abs() > 1e-3]
        assert torch.allclose(ratio, ratio[0], rtol=1e-4)


def test_recurrent_init_errors():
    stack = build_stack("rnn", 2, 3)
    with pytest.raises(ConfigError, match="unknown task.recurrent_init 'xavier'; valid choices: default, identity"):
        init_recurrent(stack, "xavier")
    with pytest.raises(ConfigError, match="task.recurrent_scale=0 must be > 0"):
        init_recurrent(stack, "orthogonal", 0)


def test_plot_flows_writes_a_png(tmp_path):
    flow = GradientFlow(np.array([1.0, 0.1, 0.01]), np.array([np.nan, 0.5, 0.4]), 0.3)
    path = plot_flows({"init": flow, "trained": flow}, tmp_path / "g.png", "test")
    assert path.stat().st_size > 1000


def test_normal_init_draws_every_weight_from_n0_scale_and_zeroes_biases():
    """task.recurrent_init=normal (d2l's from-scratch init): weights ~ N(0, 0.01^2), biases 0."""
    torch.manual_seed(0)
    stack = build_stack("lstm", 64, 256, impl="scratch")
    assert init_recurrent(stack, "normal", 0.01) == 2  # weight_ih_l0, weight_hh_l0
    weights = torch.cat([p.detach().flatten() for n, p in stack.named_parameters() if "weight" in n])
    assert abs(float(weights.mean())) < 1e-4 and float(weights.std()) == pytest.approx(0.01, rel=0.01)
    assert all(float(p.abs().max()) == 0 for n, p in stack.named_parameters() if "bias" in n)
