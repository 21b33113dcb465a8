"""model=transformer (seqbench.cells.transformer): the block is torch's pre-norm encoder layer, the
attention is causal, the state is the context (carried windows and one step at a time equal one
long window; past the context the window slides), padding, sizes, and a few training steps in each
kind of task through the real run path."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import SMOKE_LIMITS, SMOKE_TASKS, compose_cfg
from seqbench.cells import build_stack, count_parameters, detach_state, hidden_size_for, select_state
from seqbench.errors import ConfigError
from seqbench.init import init_recurrent

DT = torch.float64
LENGTHS = torch.tensor([7, 3, 6, 1, 7])                     # B = 5, T = 7, unsorted

pytestmark = pytest.mark.usefixtures("one_thread")


def stack_of(input_size=3, hidden_size=8, num_layers=2, seed=0, **kw):
    torch.manual_seed(seed)
    return build_stack("transformer", input_size, hidden_size, num_layers=num_layers, **kw).to(DT).eval()


def assert_states_close(a, b):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)


# ------------------------------------------------------------------ the equations
def test_the_block_is_torchs_pre_norm_encoder_layer():
    """With num_heads dividing hidden_size, the stack is nn.TransformerEncoder over
    nn.TransformerEncoderLayer(norm_first=True, activation="gelu") with a final LayerNorm, applied to
    W_in x + b_in + P[0..T-1] under a causal mask."""
    I, H, NH, L, T = 3, 8, 2, 2, 6
    stack = stack_of(I, H, L, num_heads=NH, ff_multiplier=3)
    layer = nn.TransformerEncoderLayer(H, NH, dim_feedforward=3 * H, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    torch_stack = nn.TransformerEncoder(layer, L, norm=nn.LayerNorm(H), enable_nested_tensor=False).to(DT)
    with torch.no_grad():
        for mine, theirs in zip(stack.layers, torch_stack.layers):
            theirs.self_attn.in_proj_weight.copy_(mine.attn_in.weight)
            theirs.self_attn.in_proj_bias.copy_(mine.attn_in.bias)
            theirs.self_attn.out_proj.load_state_dict(mine.attn_out.state_dict())
            for name in ("norm1", "norm2", "linear1", "linear2"):
                getattr(theirs, name).load_state_dict(getattr(mine, name).state_dict())
        torch_stack.norm.load_state_dict(stack.norm.state_dict())
    x = torch.randn(4, T, I, dtype=DT)
    z0 = stack.embed(x) + stack.position.weight[:T]
    mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=DT)
    torch.testing.assert_close(stack(x)[0], torch_stack(z0, mask=mask, is_causal=True))


def test_outputs_never_depend_on_later_inputs():
    stack = stack_of()
    x = torch.randn(3, 9, 3, dtype=DT)
    out, _ = stack(x)
    for t in (0, 4, 8):
        changed = x.clone()
        changed[:, t] += torch.randn(3, 3, dtype=DT)
        other, _ = stack(changed)
        torch.testing.assert_close(other[:, :t], out[:, :t], rtol=0, atol=0)
        assert (other[:, t] - out[:, t]).abs().min() > 0


def test_a_pass_attends_over_the_real_context_only(monkeypatch):
    """Empty window slots (a fresh state's) take no part in a pass: with context 64, a fresh call of
    5 tokens attends over 5 positions, a second call of 3 over 8, one token after them over 9;
    padded rows do not widen it past the longest row's real context."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr("seqbench.cells.transformer.F.scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(k.shape[2]) or real(q, k, v, **kw))
    stack = stack_of(context=64, num_layers=1)
    x = torch.randn(2, 9, 3, dtype=DT)
    _, state = stack(x[:, :5])
    _, state = stack(x[:, 5:8], state)
    stack(x[:, 8:9], state)
    stack(x[:, :7], lengths=torch.tensor([7, 2]))
    assert seen == [5, 8, 9, 7]


# ------------------------------------------------------------------ the state is the context
def test_carried_state_equals_one_long_window():
    """Two truncated-BPTT windows with the detached state carried, and generation's one step at a
    time, both give what one long window gives (the stream fits in the context)."""
    stack = stack_of(context=16)
    x = torch.randn(2, 9, 3, dtype=DT)
    out, final = stack(x)
    out1, mid = stack(x[:, :4])
    out2, final2 = stack(x[:, 4:], detach_state(mid))
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    assert_states_close(final2, final)
    state, steps = None, []
    for t in range(9):
        y, state = stack(x[:, t:t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), out)
    assert_states_close(state, final)


def test_past_the_context_the_window_slides():
    """Beyond ``context`` inputs, a step sees the last context - 1 inputs and itself, positioned from
    0 (as if the stream started there); a call longer than the context is its first ``context``
    tokens, then pieces of context // 2, run one after another with the state carried."""
    C = 6
    stack = stack_of(context=C)
    x = torch.randn(2, 15, 3, dtype=DT)
    state = None
    for t in range(15):
        y, state = stack(x[:, t:t + 1], state)
        fresh, _ = stack(x[:, max(0, t - C + 1):t + 1])
        torch.testing.assert_close(y[:, 0], fresh[:, -1])
    out, final = stack(x)
    state, pieces = None, []
    for start, end in ((0, 6), (6, 9), (9, 12), (12, 15)):
        y, state = stack(x[:, start:end], state)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), out)
    assert_states_close(state, final)


def test_state_layout_and_what_readers_see():
    """h (L, B, H): each layer's output at the last token, the top row the stack's output there
    (classification reads it); c (L, B, W) packs the window; beam search re-orders both rows-wise."""
    stack = stack_of(hidden_size=8, num_layers=3, context=10)
    K, I = 9, 3
    assert stack.cell_state_size == math.ceil(K * (I + 1) / 3)
    h0, c0 = stack.initial_state(4, dtype=DT)
    assert h0.shape == (3, 4, 8) and c0.shape == (3, 4, stack.cell_state_size) and not c0.any()
    x = torch.randn(4, 5, I, dtype=DT)
    out, (h, c) = stack(x)
    assert h.shape == (3, 4, 8) and c.shape == c0.shape
    torch.testing.assert_close(h[-1], out[:, -1])
    inputs, valid = stack.unpack(c)
    assert valid.sum(1).tolist() == [5] * 4 and torch.equal(inputs[:, -5:], x) and not valid[:, :-5].any()
    order, new = torch.tensor([2, 2, 0]), torch.randn(3, 1, I, dtype=DT)
    y, _ = stack(new, select_state((h, c), order))
    torch.testing.assert_close(y, stack(torch.cat([x[order], new], 1))[0][:, -1:])


def test_padded_rows_equal_each_sequence_alone():
    stack = stack_of(context=8)
    x = torch.randn(5, 7, 3, dtype=DT)
    out, final = stack(x, lengths=LENGTHS)
    noisy = x.clone()
    for row, n in enumerate(LENGTHS.tolist()):
        noisy[row, n:] = 1e3                                 # garbage past the end changes nothing
        assert not out[row, n:].any()                        # and the outputs there are zeros
    torch.testing.assert_close(stack(noisy, lengths=LENGTHS)[0], out)
    for row, n in enumerate(LENGTHS.tolist()):
        alone, final_alone = stack(x[row:row + 1, :n])
        torch.testing.assert_close(out[row:row + 1, :n], alone)
        for s, a in zip(final, final_alone):
            torch.testing.assert_close(s[:, row:row + 1], a)


@pytest.mark.parametrize("context", [3, 5, 6])
@pytest.mark.parametrize("carried", [False, True])
def test_padded_rows_equal_each_sequence_alone_past_the_context_and_after_a_carried_state(context, carried):
    stack = stack_of(context=context)                        # T = 7 > context: a first pass, then pieces
    x = torch.randn(5, 7, 3, dtype=DT)
    state = stack(torch.randn(5, 4, 3, dtype=DT))[1] if carried else None
    out, final = stack(x, state, lengths=LENGTHS)
    for row, n in enumerate(LENGTHS.tolist()):
        own = None if state is None else select_state(state, torch.tensor([row]))
        alone, final_alone = stack(x[row:row + 1, :n], own)
        torch.testing.assert_close(out[row:row + 1, :n], alone)
        for s, a in zip(final, final_alone):
            torch.testing.assert_close(s[:, row:row + 1], a)


def test_dropout_trains_and_gradients_reach_every_parameter():
    stack = stack_of(dropout=0.3).train()
    out, (h, c) = stack(torch.randn(4, 6, 3, dtype=DT), lengths=torch.tensor([6, 2, 5, 1]))
    (out.square().sum() + h.square().sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stack.parameters())


# ------------------------------------------------------------------ sizes
def closed_form(I, H, L, num_heads=4, context=128, ff_multiplier=4) -> int:
    A, Fw = num_heads * math.ceil(H / num_heads), ff_multiplier * H
    per_layer = 4 * H + 3 * A * (H + 1) + (A + 1) * H + (H + 1) * Fw + (Fw + 1) * H
    return (I + 1) * H + context * H + L * per_layer + 2 * H


@pytest.mark.parametrize("I,H,L,options", [(7, 5, 1, {}), (7, 8, 2, {"num_heads": 2}), (32, 130, 3, {}),
                                           (3, 6, 2, {"num_heads": 4, "context": 9, "ff_multiplier": 2})])
def test_closed_form_parameter_count(I, H, L, options):
    assert count_parameters(cell="transformer", input_size=I, hidden_size=H, num_layers=L, **options) == \
        closed_form(I, H, L, **options)


@pytest.mark.parametrize("budget,layers", [(30_000, 1), (200_000, 2)])
def test_param_budget_picks_d_model_within_2_percent(budget, layers):
    h = hidden_size_for(budget, cell="transformer", input_size=32, num_layers=layers)
    assert abs(closed_form(32, h, layers) - budget) <= 0.02 * budget
    assert build_stack("transformer", 32, 8, num_layers=layers, param_budget=budget).hidden_size == h


# ------------------------------------------------------------------ errors
def test_bad_options_and_inputs_are_one_line():
    with pytest.raises(ConfigError, match=r"^model=transformer is causal \(left to right\): bidirectional=false"):
        build_stack("transformer", 3, 8, bidirectional=True)
    for key in ("context", "num_heads", "ff_multiplier"):
        with pytest.raises(ConfigError, match=rf"^model.{key}=0 must be an integer >= 1$"):
            build_stack("transformer", 3, 8, **{key: 0})
    stack = stack_of()
    with pytest.raises(ValueError, match="expected input"):
        stack(torch.randn(2, 5, 4, dtype=DT))
    with pytest.raises(ValueError, match="lengths"):
        stack(torch.randn(2, 5, 3, dtype=DT), lengths=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="state"):
        stack(torch.randn(2, 5, 3, dtype=DT), torch.zeros(2, 2, 8, dtype=DT))
    with pytest.raises(ConfigError, match="^task.recurrent_init=orthogonal: the model has no recurrent matrix"):
        init_recurrent(stack, "orthogonal", 1.0)


def test_validation_accepts_each_task_and_refuses_a_bidirectional_transformer(tmp_path):
    from seqbench.validate import validate

    for task in TASKS.values():
        validate(compose_cfg([*task, "model=transformer", "model.param_budget=60000"], root=tmp_path))
    with pytest.raises(ConfigError, match="causal"):
        validate(compose_cfg([*TASKS["classify"], "model=transformer", "model.bidirectional=true"], root=tmp_path))


# ------------------------------------------------------------------ training through the run path
LIMITS = [*SMOKE_LIMITS, "model.context=24"]
# T = 32 > context: pieces; beam re-orders the contexts
TASKS = {**SMOKE_TASKS, "lm": [*SMOKE_TASKS["lm"], "decoding=beam", "decoding.beam_width=2"]}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_it_trains_in_each_task(tmp_path, task):
    """A few optimizer steps through ``seqbench.run.run`` (validation, the gradient probe, and for
    the LM generation one token at a time with the carried context, beam search): finite losses."""
    from seqbench.run import run

    result = run(compose_cfg([*TASKS[task], "model=transformer", *LIMITS], root=tmp_path))
    assert math.isfinite(result["train/loss"]) and math.isfinite(result["test/loss"]), result
    if task == "lm":
        assert result["sample/mean_chars"] > 0, result
