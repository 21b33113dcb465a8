"""Recurrent cells behind one interface (:class:`RecurrentStack`), selectable as ``model=<name>``.

``build_stack`` is the Hydra ``_target_`` of every ``conf/model/*.yaml``: it builds the named cell
from scratch or, where torch has a fused kernel for it, as torch's module (``impl: auto | fused |
scratch``).

Adding a cell = one class + one YAML file. In a module of this package, subclass
``scratch.ScratchStack`` (gate names, ``cell_step``, optionally a fast ``recurrence`` and its own
``parameter_shapes``; or implement :class:`RecurrentStack` directly), declare its properties as
class attributes (``has_cell_state``, ``uses_forget_bias``, ``fused_module``, ``choices``; see
``RecurrentStack``) and its options as constructor keyword arguments with defaults, decorate it
with ``@register_scratch("name")``, and write ``conf/model/<name>.yaml`` (``cell: name`` plus
the options). Modules here are imported (and their cells registered) on ``import seqbench.cells``;
the build code, the validation, the tests and the benchmarks enumerate the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from seqbench.cells.base import STACK_ARGS, RecurrentStack, State, detach_state, select_state
from seqbench.cells.fused import FusedStack
from seqbench.errors import ConfigError, choice_error

#: name -> cell class (its from-scratch RecurrentStack; filled by the cell modules imported below)
SCRATCH_CELLS: dict[str, type[RecurrentStack]] = {}
IMPLS = ("auto", "fused", "scratch")
#: keys of a model config that are not options of the cell
MODEL_KEYS = ("_target_", "name", "cell", "impl", "param_budget", *STACK_ARGS)


def register_scratch(name: str):
    """Class decorator: ``@register_scratch("peephole")`` makes ``model=peephole`` buildable."""
    def decorate(cls):
        cls.cell = name
        SCRATCH_CELLS[name] = cls
        return cls
    return decorate


def available_cells() -> list[str]:
    return sorted(SCRATCH_CELLS)


def fused_cells() -> list[str]:
    """The registered cells that torch has a fused kernel for (their class names a ``fused_module``)."""
    return sorted(name for name, cls in SCRATCH_CELLS.items() if cls.fused_module is not None)


def cell_class(cell: str) -> type[RecurrentStack]:
    """The registered class of ``cell``; ConfigError naming the registered ones if there is none."""
    cls = SCRATCH_CELLS.get(cell)
    if cls is None:
        raise choice_error("cell", cell, available_cells())
    return cls


def resolve_impl(cell: str, impl: str) -> str:
    """Which implementation ``impl`` means for ``cell``; raises ConfigError if impossible."""
    cls = cell_class(cell)
    if impl not in IMPLS:
        raise choice_error("model.impl", impl, IMPLS)
    if impl == "auto":
        return "fused" if cls.fused_module is not None else "scratch"
    if impl == "fused" and cls.fused_module is None:
        raise ConfigError(f"model.impl='fused' is not available for cell {cell!r} (torch has no fused "
                          f"kernel); valid choices: auto, scratch")
    return impl


def cell_options(cell: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``cell`` (``RecurrentStack.options``: its constructor's keyword arguments),
    ``options`` over the defaults. A key the cell does not take (unless its constructor has a
    ``**kwargs``), or a value outside its ``choices``, is a one-line ConfigError."""
    cls = cell_class(cell)
    accepted = cls.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown and not cls.takes_any_option():
        raise ConfigError(f"model.{unknown[0]} is not an option of cell {cell!r}; its options: "
                          f"{', '.join(sorted(accepted)) or 'none'}")
    values = {**accepted, **options}
    for key, valid in cls.choices.items():
        if values.get(key) not in valid:
            raise choice_error(f"model.{key}", values.get(key), valid)
    return values


def check_model(model, input_size: int | None = None) -> None:
    """A ``model`` config's values, before anything is built: cell and impl (from the registry),
    sizes, dropout, the cell's options (those its class takes, values within its ``choices``, then
    its constructor's own checks on a meta-device build at the configured hidden size, e.g. mLSTM's
    heads dividing it) and ``param_budget``: solved with
    :func:`hidden_size_for` when the stack's ``input_size`` is known (the task knows it:
    ``RecurrentTask.stack_input_size``), else only checked against the smallest stack there is
    (hidden size 1 on a 1-wide input)."""
    resolve_impl(model.cell, model.get("impl", "auto"))
    for key in ("hidden_size", "num_layers"):
        if int(model[key]) < 1:
            raise ConfigError(f"model.{key}={model[key]} must be >= 1")
    if not 0.0 <= float(model.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
    cell_options(model.cell, {k: v for k, v in model.items() if k not in MODEL_KEYS})
    kwargs = {k: v for k, v in dict(model).items() if k not in ("_target_", "hidden_size", "param_budget")}
    if model.get("param_budget") is not None and input_size is not None:
        hidden_size_for(model.param_budget, **{**kwargs, "input_size": int(input_size)})
        return
    if model.get("param_budget") is None:  # the constructor's checks at the size it will get (mLSTM: heads)
        count_parameters(**{**kwargs, "input_size": int(input_size or 1), "hidden_size": int(model.hidden_size)})
        return
    smallest = count_parameters(**{**kwargs, "input_size": int(input_size or 1), "hidden_size": 1})
    budget = _budget(model.param_budget)
    if budget * (1 + PARAM_BUDGET_TOLERANCE) < smallest:
        raise ConfigError(f"model.param_budget={budget} is too small: the smallest {model.cell} stack "
                          f"(hidden_size=1) already has {smallest} parameters")


def build_stack(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                bidirectional: bool = False, dropout: float = 0.0, impl: str = "auto",
                name: str | None = None, param_budget: int | None = None, **options) -> RecurrentStack:
    """Build the recurrent stack a ``conf/model/<name>.yaml`` describes.

    ``options`` are the cell's own (:func:`cell_options`), e.g. ``nonlinearity`` (rnn, indrnn),
    ``forget_bias`` (the LSTM family; null = 1.0 on both paths: the forget gate's effective bias
    ``b_ih + b_hh``), ``mode`` (mingru, minlstm). ``param_budget`` (equal-size mode): ignore
    ``hidden_size`` and use :func:`hidden_size_for`'s, the one whose stack has ``param_budget``
    parameters (± 2 %); the stack's ``hidden_size`` says which it was.
    """
    which = resolve_impl(cell, impl)
    options = cell_options(cell, options)
    if param_budget is not None:
        hidden_size = hidden_size_for(param_budget, cell=cell, input_size=input_size, num_layers=num_layers,
                                      bidirectional=bidirectional, dropout=dropout, impl=impl, **options)
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  bidirectional=bidirectional, dropout=dropout)
    if which == "fused":
        return FusedStack(cell_class(cell), **kwargs, **options)
    return cell_class(cell)(**kwargs, **options)


#: how far from ``model.param_budget`` a stack's parameter count may be (relative)
PARAM_BUDGET_TOLERANCE = 0.02


def _budget(param_budget) -> int:
    try:
        ok = not isinstance(param_budget, bool) and float(param_budget).is_integer() and float(param_budget) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"model.param_budget={param_budget} must be a whole number >= 1, or null (use hidden_size)")
    return int(float(param_budget))


def count_parameters(**stack_kwargs) -> int:
    """Parameters of ``build_stack(**stack_kwargs)``, built on torch's meta device (no memory, no
    init): whatever the cell, impl, depth or direction, the count is the real module's."""
    import torch

    with torch.device("meta"):
        stack = build_stack(**stack_kwargs)
    return sum(p.numel() for p in stack.parameters())


def hidden_size_for(param_budget: int, **stack_kwargs) -> int:
    """Equal-size mode: the hidden size whose stack (``build_stack(**stack_kwargs, hidden_size=H)``)
    has the parameter count closest to ``param_budget``; ConfigError (one line) when even that one
    is more than 2 % away (e.g. a budget below the smallest stack's count).

    The count grows with H, so: double H until the count reaches the budget, bisect for the
    first H at or above it, and keep it or H - 1, whichever is closer (about 2 log2 H meta builds)."""
    budget = _budget(param_budget)
    stack_kwargs = {k: v for k, v in stack_kwargs.items() if k not in ("hidden_size", "param_budget")}
    counts: dict[int, int] = {}

    def count(h: int) -> int:
        if h not in counts:
            counts[h] = count_parameters(**stack_kwargs, hidden_size=h)
        return counts[h]

    if count(1) == count(2):  # e.g. model=boe: no parameters of its own, whatever the size
        raise ConfigError(f"model.param_budget={budget} does not apply to cell {stack_kwargs.get('cell')!r}: its "
                          f"stack has {count(1)} parameters at every hidden size (leave model.param_budget null)")
    lo, hi = 1, 1
    while count(hi) < budget:
        if hi >= 1 << 24:
            raise ConfigError(f"model.param_budget={budget} is out of reach (hidden_size {hi} has {count(hi)} parameters)")
        lo, hi = hi + 1, hi * 2
    while lo < hi:  # the first hidden size with count >= budget lies in [lo, hi]
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count(mid) >= budget else (mid + 1, hi)
    best = min((h for h in (hi - 1, hi) if h >= 1), key=lambda h: abs(count(h) - budget))
    if abs(count(best) - budget) > PARAM_BUDGET_TOLERANCE * budget:
        cell = stack_kwargs.get("cell")
        layout = (f"{stack_kwargs.get('num_layers', 1)} layer(s)"
                  + (", bidirectional" if stack_kwargs.get("bidirectional") else "")
                  + f", input {stack_kwargs.get('input_size')}")
        hint = "; raise the budget" if best == 1 else ""
        raise ConfigError(f"model.param_budget={budget} cannot be met within ±{PARAM_BUDGET_TOLERANCE:.0%}: the "
                          f"closest {cell} stack ({layout}) has {count(best)} parameters at hidden_size={best}{hint}")
    return best


# Every other module of this package holds cells that register themselves on import (they need
# register_scratch above): a new ``cells/<family>.py`` is picked up without editing this file.
from seqbench.cells.scratch import ScratchStack, copy_weights, load_fused_weights  # noqa: E402

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in ("base", "fused", "scratch"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["RecurrentStack", "State", "FusedStack", "build_stack", "check_model", "register_scratch",
           "hidden_size_for", "count_parameters", "PARAM_BUDGET_TOLERANCE", "available_cells", "fused_cells",
           "cell_class", "cell_options", "resolve_impl", "detach_state", "select_state", "SCRATCH_CELLS",
           "ScratchStack", "copy_weights", "load_fused_weights"]
