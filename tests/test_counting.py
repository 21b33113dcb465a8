"""Seed 002's counting toy: the two-parameter linear RNN (model=linear) against the closed forms
of its final state and MSE gradient (seqbench.metrics.counting), the exploding gradient at
w_rec > 1, and training with Rprop from the seed's initial point."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_cfg
from seqbench.cells import build_stack
from seqbench.metrics.counting import final_state, mse_gradient

DT = torch.float64


def linear_model(w_x: float, w_rec: float):
    return build_stack("linear", input_size=1, hidden_size=1, init_input=w_x, init_recurrent=w_rec).to(DT)


@pytest.mark.parametrize("T", [1, 10, 40])
@pytest.mark.parametrize("w_x,w_rec", [(1.2, 1.2), (0.7, 0.9), (1.0, 1.0), (-0.5, 1.05)])
def test_linear_rnn_state_and_gradient_match_the_closed_form(T, w_x, w_rec):
    torch.manual_seed(T)
    bits = torch.randint(0, 2, (20, T)).to(DT)
    y = bits.sum(1)
    stack = linear_model(w_x, w_rec)
    with torch.no_grad():  # exact values (the constructor filled float32-rounded ones)
        stack.weight_ih_l0.fill_(w_x)
        stack.weight_hh_l0.fill_(w_rec)
    _, s = stack(bits[..., None])
    s_T = s[0, :, 0]
    torch.testing.assert_close(s_T, final_state(bits, w_x, w_rec))
    # by hand, for the first string: w_x * sum_k w_rec^(T-k) x_k
    assert float(s_T[0].detach()) == pytest.approx(w_x * sum(w_rec ** (T - 1 - k) * float(bits[0, k]) for k in range(T)))
    loss = ((s_T - y) ** 2).mean()
    loss.backward()
    g_x, g_rec = mse_gradient(bits, y, w_x, w_rec)
    assert float(stack.weight_ih_l0.grad) == pytest.approx(g_x, rel=1e-9, abs=1e-12)
    assert float(stack.weight_hh_l0.grad) == pytest.approx(g_rec, rel=1e-9, abs=1e-12)


def test_the_gradient_explodes_with_the_length_at_w_rec_above_one():
    """At (1.2, 1.2) ds_T/dw_rec carries w_rec^(T-2) (T - 1) terms: 40 bits give a gradient
    hundreds of times the 10-bit one; at w_rec = 1 the counting solution has zero gradient."""
    bits10, bits40 = torch.ones(1, 10, dtype=DT), torch.ones(1, 40, dtype=DT)
    g10 = abs(mse_gradient(bits10, bits10.sum(1), 1.2, 1.2)[1])
    g40 = abs(mse_gradient(bits40, bits40.sum(1), 1.2, 1.2)[1])
    assert g40 / g10 > 1.2 ** 30 / 10
    assert mse_gradient(bits40, bits40.sum(1), 1.0, 1.0) == (0.0, 0.0)


def test_rprop_from_the_seed_initial_point_learns_to_count(tmp_path):
    from seqbench.run import run

    cfg = compose_cfg(["task=count", "task.readout=state", "data=counting_bits", "model=linear", "model.init_input=1.2",
                       "model.init_recurrent=1.2", "optimizer=rprop", "trainer.max_epochs=150",
                       "trainer.gradient_clip_val=null", "trainer.enable_progress_bar=false", "logger=none",
                       "num_threads=1"], root=tmp_path)
    metrics = run(cfg)
    assert metrics["num_parameters"] == 2
    assert metrics["test/mse"] < 1e-3 < metrics["test/baseline_mse"]  # unseen strings, counted


def test_state_readout_needs_one_unit(tmp_path):
    from seqbench.errors import ConfigError
    from seqbench.validate import validate

    cfg = compose_cfg(["task=count", "data=counting_bits", "model=lstm", "task.readout=state"], root=tmp_path)
    with pytest.raises(ConfigError, match="task.readout=state .* needs model.hidden_size=1"):
        validate(cfg)
    validate(compose_cfg(["task=count", "data=counting_bits", "model=lstm"], root=tmp_path))  # default: linear head
