"""Recurrent cells behind one interface (:class:`RecurrentStack`), selectable as ``model=<name>``.

``build_stack`` is the Hydra ``_target_`` of every ``conf/model/*.yaml``: it picks the fused torch
module or the from-scratch implementation of the named cell (``impl: auto | fused | scratch``).
"""

from __future__ import annotations

from seqbench.cells.base import RecurrentStack, State, detach_state, select_state
from seqbench.cells.fused import FusedStack
from seqbench.errors import ConfigError, choice_error

#: cells torch ships a fused kernel for
FUSED_CELLS = ("rnn", "lstm", "gru")
#: name -> from-scratch RecurrentStack subclass (filled by seqbench.cells.scratch modules)
SCRATCH_CELLS: dict[str, type[RecurrentStack]] = {}
IMPLS = ("auto", "fused", "scratch")


def register_scratch(name: str):
    """Class decorator: ``@register_scratch("peephole")`` makes ``model=peephole`` buildable."""
    def decorate(cls):
        cls.cell = name
        SCRATCH_CELLS[name] = cls
        return cls
    return decorate


def available_cells() -> list[str]:
    return sorted(set(FUSED_CELLS) | set(SCRATCH_CELLS))


def resolve_impl(cell: str, impl: str) -> str:
    """Which implementation ``impl`` means for ``cell``; raises ConfigError if impossible."""
    if cell not in available_cells():
        raise choice_error("cell", cell, available_cells())
    if impl not in IMPLS:
        raise choice_error("model.impl", impl, IMPLS)
    if impl == "auto":
        return "fused" if cell in FUSED_CELLS else "scratch"
    if impl == "fused" and cell not in FUSED_CELLS:
        raise ConfigError(f"model.impl='fused' is not available for cell {cell!r} (torch has no fused "
                          f"kernel); valid choices: auto, scratch")
    if impl == "scratch" and cell not in SCRATCH_CELLS:
        raise ConfigError(f"model.impl='scratch' is not available for cell {cell!r}; "
                          f"valid choices: auto, fused")
    return impl


def build_stack(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                bidirectional: bool = False, dropout: float = 0.0, impl: str = "auto",
                nonlinearity: str = "tanh", forget_bias: float | None = None,
                name: str | None = None, **cell_options) -> RecurrentStack:
    """Build the recurrent stack a ``conf/model/<name>.yaml`` describes."""
    which = resolve_impl(cell, impl)
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  bidirectional=bidirectional, dropout=dropout)
    if cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    if forget_bias is not None and cell not in ("rnn", "gru"):
        kwargs["forget_bias"] = forget_bias
    if which == "fused":
        return FusedStack(cell, **kwargs, **cell_options)
    return SCRATCH_CELLS[cell](**kwargs, **cell_options)


__all__ = ["RecurrentStack", "State", "FusedStack", "build_stack", "register_scratch",
           "available_cells", "resolve_impl", "detach_state", "select_state", "FUSED_CELLS",
           "SCRATCH_CELLS"]
