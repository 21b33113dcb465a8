"""The one interface every recurrent stack implements.

Shapes (batch-first, one layout for the whole code base):
    x       (B, T, I)               input sequence
    output  (B, T, D * H)           top layer's hidden states, D = 2 if bidirectional else 1
    state   (L * D, B, H)           for RNN / GRU
            ((L * D, B, H), (L * D, B, C)) = (h, c) for the LSTM family, C = ``cell_state_size``:
                                    H, or wider where a cell packs more memory into c (xLSTM)
``lengths`` (B,) marks the true end of each sequence in a padded batch; positions past it
produce zeros and do not change the final state.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Optional, Union

import torch
from torch import Tensor, nn

State = Union[Tensor, tuple[Tensor, Tensor]]


#: constructor arguments every stack takes; a cell's other arguments are its options
STACK_ARGS = ("input_size", "hidden_size", "num_layers", "bidirectional", "dropout")


class RecurrentStack(nn.Module):
    """Base class: stacked (optionally bidirectional) recurrent layers of one cell kind.

    A registered cell class (``seqbench.cells.register_scratch``) declares what the build code,
    the validation, the tests and the benchmarks need to know about it, as class attributes:

    * ``has_cell_state``: the state is the pair (h, c) (LSTM family) instead of h alone;
    * ``uses_forget_bias``: it takes ``forget_bias`` and a fused twin must get it too;
    * ``fused_module``: torch's fused module computing the same cell with the same parameter
      names (``nn.LSTM`` ...), or None: ``impl=fused`` is then refused;
    * ``choices``: the valid values of its options that are a choice (``nonlinearity``, ``mode``);
    * ``carries_state``: it resumes from a state passed in (truncated BPTT, generation); False for
      a reference row without recurrence (``boe``), which tasks that carry state refuse;
    * ``output_feeds_back``: h_{t-1} is an input of step t; False for a cell whose carried memory
      is all in c and whose h_t is only read out of it (mLSTM), so dL/dh_{t-k} = 0 for k >= 1.

    With ``has_cell_state``, ``cell_state_size`` is the width of c (``hidden_size`` unless the
    cell packs more into it, e.g. sLSTM's ``[c | n | m]``): every state tensor keeps the layout
    ``(L * D, B, width)``, so code that detaches, re-orders (dim 1) or carries states needs no
    knowledge of the cell, and whatever reads a hidden state reads ``h`` (the first tensor).

    Its options are the extra keyword arguments of its constructor, with their defaults
    (:meth:`options`): ``conf/model/<name>.yaml`` sets them by name.
    """

    #: registry name of the cell (``model=<name>`` picks it); set by the registration.
    cell: str = ""
    #: True for the LSTM family, whose state is the pair (h, c).
    has_cell_state: bool = False
    #: True when the constructor takes ``forget_bias`` (the forget gate's initial bias).
    uses_forget_bias: bool = False
    #: torch's fused module of the same cell (``nn.RNN``/``nn.LSTM``/``nn.GRU``), or None.
    fused_module: ClassVar[Optional[type[nn.RNNBase]]] = None
    #: option -> its valid values, for options that are a choice.
    choices: ClassVar[dict[str, tuple]] = {}
    #: False for a stack that cannot resume from a carried state (a bag of embeddings).
    carries_state: ClassVar[bool] = True
    #: False when h_{t-1} does not enter step t (the memory is all in c: mLSTM).
    output_feeds_back: ClassVar[bool] = True

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The cell's own constructor options and their defaults, e.g. ``{"nonlinearity": "tanh"}``:
        every keyword argument of ``__init__`` besides the stack's (:data:`STACK_ARGS`)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in params
                if p.name != "self" and p.name not in STACK_ARGS
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def takes_any_option(cls) -> bool:
        """True when ``__init__`` has a ``**kwargs``: options besides :meth:`options` are passed on."""
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    @property
    def cell_state_size(self) -> int:
        """Width (last dim) of the cell-state tensor c: ``hidden_size``, or more for a cell that
        packs several memories into c (xLSTM)."""
        return self.hidden_size

    def forward(self, x: Tensor, state: Optional[State] = None,
                lengths: Optional[Tensor] = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """Zeros of the state's shape."""
        LD = self.num_layers * self.num_directions
        h = torch.zeros(LD, batch_size, self.hidden_size, device=device, dtype=dtype)
        if not self.has_cell_state:
            return h
        return h, torch.zeros(LD, batch_size, self.cell_state_size, device=device, dtype=dtype)


def detach_state(state: Optional[State]) -> Optional[State]:
    """Cut the graph between truncated-BPTT windows, keep the values."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def select_state(state: State, index: Tensor) -> State:
    """Pick (and reorder/repeat) batch entries of a state: beam search re-ranking."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)
