"""Cell zoo: scratch vs fused torch modules, parameter counts, configs, errors, init."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seqbench.cells import (FusedStack, ScratchStack, available_cells, build_stack, cell_class, cell_options,
                            copy_weights, fused_cells, load_fused_weights, resolve_impl, select_state)
from seqbench.errors import ConfigError

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")
CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
LENGTHS = torch.tensor([6, 2, 5, 1, 6])                     # B = 5, T = 6, unsorted


def pair(cell, num_layers=1, bidirectional=False, input_size=3, hidden_size=4, **kw):
    """A fused stack and a scratch stack of the same cell holding the same weights (float64)."""
    fused = build_stack(cell, input_size, hidden_size, num_layers=num_layers,
                        bidirectional=bidirectional, impl="fused", **kw).to(DT)
    scratch = build_stack(cell, input_size, hidden_size, num_layers=num_layers,
                          bidirectional=bidirectional, impl="scratch", **kw).to(DT)
    return fused, load_fused_weights(scratch, fused)


def state_tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def random_state(stack, batch, requires_grad=True):
    shape = (stack.num_layers * stack.num_directions, batch, stack.hidden_size)
    h = torch.randn(shape, dtype=DT, requires_grad=requires_grad)
    if stack.has_cell_state:
        return h, torch.randn(shape, dtype=DT, requires_grad=requires_grad)
    return h


def run_with_grads(stack, x, state, lengths):
    """Outputs, final states and gradients of a fixed random loss w.r.t. everything."""
    out, final = stack(x, state, lengths)
    gen = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=DT)).sum()
    for k, s in enumerate(state_tensors(final)):
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=DT)).sum() * (k + 1)
    inputs = [x, *state_tensors(state), *stack.parameters()]
    return out, state_tensors(final), torch.autograd.grad(loss, inputs)


def assert_close_all(a, b, atol=1e-10):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=atol, rtol=1e-9)


# ------------------------------------------------------------------ scratch == fused
@pytest.mark.parametrize("cell,num_layers,bidirectional,padded", list(itertools.product(
    fused_cells(), [1, 2], [False, True], [False, True])))
def test_scratch_matches_fused(cell, num_layers, bidirectional, padded):
    torch.manual_seed(0)
    fused, scratch = pair(cell, num_layers, bidirectional)
    x = torch.randn(5, 6, 3, dtype=DT, requires_grad=True)
    state = random_state(fused, 5)
    lengths = LENGTHS if padded else None
    out_f, fin_f, grad_f = run_with_grads(fused, x, state, lengths)
    out_s, fin_s, grad_s = run_with_grads(scratch, x, state, lengths)
    assert out_s.shape == (5, 6, fused.output_size)
    assert_close_all([out_s, *fin_s, *grad_s], [out_f, *fin_f, *grad_f])


def test_relu_rnn_matches_fused():
    torch.manual_seed(0)
    fused, scratch = pair("rnn", 2, True, nonlinearity="relu")
    x = torch.randn(5, 6, 3, dtype=DT, requires_grad=True)
    state = random_state(fused, 5)
    for lengths in (None, LENGTHS):
        f, s = run_with_grads(fused, x, state, lengths), run_with_grads(scratch, x, state, lengths)
        assert_close_all([s[0], *s[1], *s[2]], [f[0], *f[1], *f[2]])


@pytest.mark.parametrize("cell", fused_cells())
def test_float32_close_to_fused(cell):
    torch.manual_seed(0)
    fused = build_stack(cell, 16, 32, num_layers=2, impl="fused")
    scratch = load_fused_weights(build_stack(cell, 16, 32, num_layers=2, impl="scratch"), fused)
    x = torch.randn(8, 20, 16)
    out_f, _ = fused(x)
    out_s, _ = scratch(x)
    torch.testing.assert_close(out_s, out_f, atol=1e-5, rtol=1e-4)
    out_f.square().sum().backward()
    out_s.square().sum().backward()
    for (name, p), q in zip(scratch.named_parameters(), fused.rnn.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    fused, scratch = pair("lstm", 2, dropout=0.5)
    x = torch.randn(4, 5, 3, dtype=DT)
    scratch.train()
    assert not torch.allclose(scratch(x)[0], scratch(x)[0])      # dropout is active
    fused.eval(), scratch.eval()
    torch.testing.assert_close(scratch(x)[0], fused(x)[0])


def test_copy_weights_both_ways_and_mismatch():
    fused, scratch = pair("gru", 2, True)
    with torch.no_grad():
        for p in scratch.parameters():
            p.add_(1.0)
    copy_weights(fused, scratch)                                 # scratch -> fused
    for (name, p), q in zip(scratch.named_parameters(), fused.rnn.parameters()):
        assert torch.equal(p, q), name
    copy_weights(torch.nn.GRU(3, 4, 2, bidirectional=True).to(DT), scratch)
    with pytest.raises(ValueError, match="shape"):
        copy_weights(build_stack("cifg", 3, 4, impl="scratch"), build_stack("lstm", 3, 4, impl="fused"))


# ------------------------------------------------------------------ parameter counts
#: parameters of one layer and direction with an ``n``-wide input, in closed form: G gate blocks
#: of G*H*(n + H) weights and 2*G*H biases (torch's layout), plus the cell's extras
PER_DIRECTION = {
    "rnn": lambda n, H: 1 * H * (n + H) + 2 * 1 * H,
    "gru": lambda n, H: 3 * H * (n + H) + 2 * 3 * H,
    "lstm": lambda n, H: 4 * H * (n + H) + 2 * 4 * H,
    "peephole": lambda n, H: 4 * H * (n + H) + 2 * 4 * H + 3 * H,   # p_i, p_f, p_o
    "cifg": lambda n, H: 3 * H * (n + H) + 2 * 3 * H,
    "mingru": lambda n, H: 2 * (n * H + H),                        # W_z, W_h and their biases only
    "minlstm": lambda n, H: 3 * (n * H + H),                       # W_f, W_i, W_h and biases
    "indrnn": lambda n, H: n * H + H + H,                          # W_ih, b, the vector u
}


def expected_params(cell, I, H, L, D):
    """Layer 0 reads I inputs, the layers above D*H; D directions each."""
    return sum(D * PER_DIRECTION[cell](I if layer == 0 else D * H, H) for layer in range(L))


@pytest.mark.parametrize("cell", sorted(PER_DIRECTION))
def test_parameter_counts(cell):
    I, H = 7, 5
    for L, bidirectional in itertools.product([1, 2], [False, True]):
        D = 2 if bidirectional else 1
        impls = ["scratch", "fused"] if cell in fused_cells() else ["scratch"]
        for impl in impls:
            stack = build_stack(cell, I, H, num_layers=L, bidirectional=bidirectional, impl=impl)
            n = sum(p.numel() for p in stack.parameters())
            assert n == expected_params(cell, I, H, L, D), (cell, impl, L, D)


def test_scratch_parameter_layout_is_torchs():
    scratch = build_stack("lstm", 3, 4, num_layers=2, bidirectional=True, impl="scratch")
    reference = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    assert [(n, p.shape) for n, p in scratch.named_parameters()] == \
        [(n, p.shape) for n, p in reference.named_parameters()]


# ------------------------------------------------------------------ selection and errors
def test_registry_and_resolve_impl():
    assert {"rnn", "lstm", "gru", "peephole", "cifg", "mingru", "minlstm", "indrnn"} <= set(available_cells())
    assert fused_cells() == ["gru", "lstm", "rnn"]               # what torch ships
    assert {("lstm", "fused"), ("lstm", "scratch"), ("peephole", "scratch"), ("cifg", "scratch")} <= \
        set(FORGET_BIAS_CELLS)                                   # the classes that declare uses_forget_bias
    assert resolve_impl("peephole", "auto") == "scratch"
    assert resolve_impl("lstm", "auto") == "fused"
    assert resolve_impl("gru", "scratch") == "scratch"
    assert isinstance(build_stack("cifg", 3, 4), ScratchStack)
    assert isinstance(build_stack("rnn", 3, 4), FusedStack)


@pytest.mark.parametrize("cell", sorted(set(available_cells()) - set(fused_cells())))
def test_fused_impl_of_scratch_only_cell_is_config_error(cell):
    with pytest.raises(ConfigError, match="valid choices: auto, scratch"):
        resolve_impl(cell, "fused")
    with pytest.raises(ConfigError, match=cell):
        build_stack(cell, 3, 4, impl="fused")


def test_unknown_cell_and_impl():
    with pytest.raises(ConfigError, match=f"valid choices: {', '.join(available_cells())}$"):
        build_stack("lstmm", 3, 4)
    with pytest.raises(ConfigError, match="valid choices: auto, fused, scratch"):
        build_stack("lstm", 3, 4, impl="cudnn")


def test_bad_inputs_raise():
    stack = build_stack("gru", 3, 4, impl="scratch")
    with pytest.raises(ValueError, match="expected input"):
        stack(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="lengths"):
        stack(torch.randn(2, 5, 3), lengths=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="state"):
        stack(torch.randn(2, 5, 3), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="nonlinearity"):
        build_stack("rnn", 3, 4, impl="scratch", nonlinearity="gelu")


def test_cell_options_come_from_the_class():
    """A cell's options are its constructor's keyword arguments; others and bad choices are one line."""
    assert cell_options("rnn", {}) == {"nonlinearity": "tanh"}
    assert cell_options("lstm", {"forget_bias": 2.0}) == {"forget_bias": 2.0}
    assert cell_options("mingru", {}) == {"mode": "auto"}
    with pytest.raises(ConfigError, match=r"^model.nonlinearity is not an option of cell 'gru'; its options: none$"):
        build_stack("gru", 3, 4, nonlinearity="relu")
    with pytest.raises(ConfigError, match=r"^model.forget_bias is not an option of cell 'mingru'; its options: mode$"):
        build_stack("mingru", 3, 4, forget_bias=1.0)
    with pytest.raises(ConfigError, match=r"^unknown model.mode 'fast'; valid choices: auto, loop, scan, sequential$"):
        build_stack("minlstm", 3, 4, mode="fast")


def test_every_registered_cell_is_one_yaml_away():
    """Each registered cell has its ``conf/model/<name>.yaml`` (``cell: <name>``), and the class's
    declared state kind is the one it returns."""
    for cell in available_cells():
        assert OmegaConf.load(CONF / f"{cell}.yaml").cell == cell, cell
        stack = build_stack(cell, 3, 4)
        _, state = stack(torch.randn(2, 3, 3))
        assert isinstance(state, tuple) == cell_class(cell).has_cell_state, cell


# ------------------------------------------------------------------ forget-gate bias
FORGET_BIAS_CELLS = [(cell, impl) for cell in available_cells() if cell_class(cell).uses_forget_bias
                     for impl in (["fused", "scratch"] if cell in fused_cells() else ["scratch"])]


@pytest.mark.parametrize("cell,impl", FORGET_BIAS_CELLS)
@pytest.mark.parametrize("value", [None, 2.5])
def test_forget_bias_init(cell, impl, value):
    stack = build_stack(cell, 3, 4, num_layers=2, bidirectional=True, impl=impl, forget_bias=value)
    H = 4
    k = cell_class(cell).gates.index("f")                         # gate order (f,g,o) / (i,f,g,o)
    f = slice(k * H, (k + 1) * H)
    params = dict(stack.rnn.named_parameters() if impl == "fused" else stack.named_parameters())
    suffixes = [n[len("bias_ih"):] for n in params if n.startswith("bias_ih")]
    assert len(suffixes) == 4
    for sfx in suffixes:
        effective = params["bias_ih" + sfx][f] + params["bias_hh" + sfx][f]
        torch.testing.assert_close(effective, torch.full((H,), 1.0 if value is None else value))


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_model_yaml_instantiates(path):
    cfg = OmegaConf.load(path)
    stack = instantiate(cfg, input_size=6)
    assert stack.cell == cfg.cell
    expected = resolve_impl(cfg.cell, cfg.impl)
    assert isinstance(stack, FusedStack if expected == "fused" else cell_class(cfg.cell))
    assert stack.bidirectional == cfg.bidirectional
    out, state = stack(torch.randn(2, 3, 6), lengths=torch.tensor([3, 2]))
    assert out.shape == (2, 3, stack.output_size)
    reordered = select_state(state, torch.tensor([1, 1, 0]))
    for s, zeros in zip(state_tensors(reordered), state_tensors(stack.initial_state(3)), strict=True):
        assert s.shape == zeros.shape == (stack.num_layers * stack.num_directions, 3, zeros.shape[2])
    assert state_tensors(reordered)[0].shape[2] == stack.hidden_size
    assert {"bilstm", "bigru", "birnn", "peephole", "cifg"} <= {p.stem for p in CONF.glob("*.yaml")}
