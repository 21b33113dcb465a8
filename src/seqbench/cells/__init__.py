"""Recurrent cells behind one interface (:class:`RecurrentStack`), selectable as ``model=<name>``.

``build_stack`` is the Hydra ``_target_`` of every ``conf/model/*.yaml``: it picks the fused torch
module or the from-scratch implementation of the named cell (``impl: auto | fused | scratch``).

Adding a cell = one class + one YAML file: in a module of this package, subclass
``scratch.ScratchStack`` (gate names, ``cell_step``, optionally a fast ``recurrence``), decorate
it with ``@register_scratch("name")``, and write ``conf/model/<name>.yaml``. Modules here are
imported (and their cells registered) on ``import seqbench.cells``.
"""

from __future__ import annotations

import importlib
import pkgutil

from seqbench.cells.base import RecurrentStack, State, detach_state, select_state
from seqbench.cells.fused import FusedStack
from seqbench.errors import ConfigError, choice_error

#: cells torch ships a fused kernel for
FUSED_CELLS = ("rnn", "lstm", "gru")
#: cells whose state is (h, c) and whose forget-gate bias is initialised (``forget_bias``)
LSTM_FAMILY = ("lstm", "peephole", "cifg")
#: forget-gate bias init of the LSTM family when the config gives none (Jozefowicz et al. 2015)
DEFAULT_FORGET_BIAS = 1.0
#: name -> from-scratch RecurrentStack subclass (filled by the cell modules imported below)
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


def check_model(model) -> None:
    """A ``model`` config's values, before anything is built: cell and impl (from the registries),
    sizes, dropout, and ``nonlinearity`` (``rnn`` only; its choices are ``cells.rnn.ACTIVATIONS``)."""
    from seqbench.cells.rnn import ACTIVATIONS

    resolve_impl(model.cell, model.get("impl", "auto"))
    for key in ("hidden_size", "num_layers"):
        if int(model[key]) < 1:
            raise ConfigError(f"model.{key}={model[key]} must be >= 1")
    if not 0.0 <= float(model.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
    if model.get("nonlinearity", "tanh") not in ACTIVATIONS:
        raise choice_error("model.nonlinearity", model.nonlinearity, ACTIVATIONS)


def build_stack(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                bidirectional: bool = False, dropout: float = 0.0, impl: str = "auto",
                nonlinearity: str = "tanh", forget_bias: float | None = None,
                name: str | None = None, **cell_options) -> RecurrentStack:
    """Build the recurrent stack a ``conf/model/<name>.yaml`` describes.

    ``forget_bias`` (LSTM family only; default 1.0 on both paths) sets the forget gate's
    effective bias ``b_ih + b_hh``; ``nonlinearity`` (tanh | relu) is for ``rnn`` only.
    """
    which = resolve_impl(cell, impl)
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  bidirectional=bidirectional, dropout=dropout)
    if cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    if cell in LSTM_FAMILY:
        kwargs["forget_bias"] = DEFAULT_FORGET_BIAS if forget_bias is None else forget_bias
    if which == "fused":
        return FusedStack(cell, **kwargs, **cell_options)
    return SCRATCH_CELLS[cell](**kwargs, **cell_options)


# Every other module of this package holds cells that register themselves on import (they need
# register_scratch above): a new ``cells/<family>.py`` is picked up without editing this file.
from seqbench.cells.scratch import ScratchStack, copy_weights, load_fused_weights  # noqa: E402

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in ("base", "fused", "scratch"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["RecurrentStack", "State", "FusedStack", "build_stack", "check_model", "register_scratch",
           "available_cells", "resolve_impl", "detach_state", "select_state", "FUSED_CELLS",
           "SCRATCH_CELLS", "LSTM_FAMILY", "ScratchStack", "copy_weights", "load_fused_weights"]
