"""Equal-size mode: ``model.param_budget=N`` picks the hidden size whose recurrent stack has N
parameters (± 2 %), for every registered cell, impl, direction and depth; impossible budgets are
one ConfigError line before anything runs."""

from __future__ import annotations

import itertools

import pytest

from seqbench.cells import (PARAM_BUDGET_TOLERANCE, available_cells, build_stack, check_model, count_parameters,
                            hidden_size_for, resolve_impl)
from seqbench.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
INPUT = 32


def sizable(cell, impl, layers, bi) -> bool:
    """The cell builds this layout and its size grows with hidden_size (a parameter-free reference
    row such as a bag of embeddings has nothing to size, and refuses layers and directions)."""
    kwargs = dict(cell=cell, input_size=INPUT, num_layers=layers, bidirectional=bi, impl=impl)
    try:
        return count_parameters(**kwargs, hidden_size=2) < count_parameters(**kwargs, hidden_size=3)
    except ConfigError:
        return False


def variants():
    """Every registered cell with each implementation it has (from the registry), uni- and
    bidirectional, 1 and 2 layers, where the cell has a size to choose."""
    out = []
    for cell in available_cells():
        impls = []
        for impl in ("fused", "scratch"):
            try:
                impls.append(resolve_impl(cell, impl))
            except ConfigError:
                pass
        assert impls, cell
        out += [(cell, impl, layers, bi) for impl, layers, bi in itertools.product(impls, (1, 2), (False, True))
                if sizable(cell, impl, layers, bi)]
    return out


def test_the_new_cells_are_sized_too():
    assert {"mingru", "minlstm", "indrnn", "lstm", "peephole"} <= {v[0] for v in variants()}


def n_params(stack) -> int:
    return sum(p.numel() for p in stack.parameters())


@pytest.mark.parametrize("budget", [50_000, 200_000])
def test_every_cell_meets_the_budget_within_2_percent(budget):
    for cell, impl, layers, bi in variants():
        stack = build_stack(cell, INPUT, hidden_size=7, num_layers=layers, bidirectional=bi, impl=impl,
                            param_budget=budget)
        assert abs(n_params(stack) - budget) <= PARAM_BUDGET_TOLERANCE * budget, (cell, impl, layers, bi)
        h = stack.hidden_size  # the closest integer size: one step either way is no closer
        for other in (h - 1, h + 1):
            if other >= 1:
                nearby = build_stack(cell, INPUT, other, num_layers=layers, bidirectional=bi, impl=impl)
                assert abs(n_params(nearby) - budget) >= abs(n_params(stack) - budget)


def test_a_coarse_budget_is_met_or_refused_in_one_line():
    """At 20,000 parameters a 2-layer stack's hidden size is ~25, where one unit more changes the
    count by ~8 %: each configuration is either within 2 % or a one-line ConfigError."""
    met = 0
    for cell, impl, layers, bi in variants():
        kwargs = dict(cell=cell, input_size=INPUT, num_layers=layers, bidirectional=bi, impl=impl)
        try:
            h = hidden_size_for(20_000, **kwargs)
        except ConfigError as e:
            assert "model.param_budget=20000 cannot be met" in str(e) and "\n" not in str(e)
            continue
        met += 1
        assert abs(n_params(build_stack(hidden_size=h, **kwargs)) - 20_000) <= 400
    assert met >= len(variants()) // 2


def test_too_small_a_budget_is_one_error_line_naming_it():
    with pytest.raises(ConfigError) as e:
        build_stack("lstm", INPUT, 16, param_budget=100)
    message = str(e.value)
    assert "\n" not in message and message.startswith("model.param_budget=100 ")
    assert "hidden_size=1" in message
    with pytest.raises(ConfigError, match=r"^model.param_budget=0 must be a whole number >= 1"):
        hidden_size_for(0, cell="gru", input_size=INPUT)


def test_validation_refuses_an_impossible_budget_before_any_run(make_cfg):
    from seqbench.validate import validate

    validate(make_cfg("model=gru", "model.param_budget=30000"))
    with pytest.raises(ConfigError, match="^model.param_budget=5 is too small"):
        check_model(make_cfg("model=gru", "model.param_budget=5").model)  # too small for any input
    with pytest.raises(ConfigError, match="^model.param_budget=300 cannot be met"):
        validate(make_cfg("model=gru", "model.param_budget=300"))  # the task knows the input: embedding.dim


def test_the_protocol_and_the_built_module_use_the_budget(make_cfg):
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from seqbench.protocol import protocol

    cfg = make_cfg("model=gru", "model.param_budget=30000")
    assert "equal parameters: 30000 per stack" in protocol(cfg, [0])
    assert "hidden 32" in protocol(make_cfg("model=gru"), [0])
    module = get_class(cfg.task._target_)(vocab_size=20, model=OmegaConf.to_container(cfg.model),
                                          embedding=OmegaConf.to_container(cfg.embedding))
    assert abs(n_params(module.stack) - 30_000) <= 600 and module.stack.hidden_size != cfg.model.hidden_size


@pytest.mark.parametrize("overrides, input_size", [
    (["task=adding", "data=adding"], 2),                                          # (value, marker) pairs
    (["task=copy", "data=copy", "embedding=onehot", "data.num_symbols=6"], 8),      # blank, 6 symbols, delimiter
    (["task=classify", "data=counting_ones", "embedding.dim=24"], 24),
])
def test_each_task_solves_the_budget_for_its_own_input(make_cfg, overrides, input_size):
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from seqbench.validate import validate

    cfg = make_cfg(*overrides, "model=lstm", "model.param_budget=40000", tiny=False)
    validate(cfg)
    task = get_class(cfg.task._target_)
    assert task.stack_input_size(cfg) == input_size
    model = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_target_"}
    stack = build_stack(**model, input_size=input_size)
    assert abs(n_params(stack) - 40_000) <= 800
    model.pop("param_budget")
    assert stack.hidden_size == hidden_size_for(40_000, **model, input_size=input_size) != cfg.model.hidden_size


def test_a_budget_for_a_stack_without_parameters_says_it_does_not_apply():
    """model=boe has no parameters of its own at any size: no hidden size can meet a budget."""
    with pytest.raises(ConfigError, match=r"^model.param_budget=33000 does not apply to cell 'boe': its stack "
                                          r"has 0 parameters at every hidden size \(leave model.param_budget null\)$"):
        hidden_size_for(33000, cell="boe", input_size=INPUT)
