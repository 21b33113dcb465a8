"""Recurrent-weight initialisation, applied by a task after its stack is built (``task.recurrent_init``).

Works on any module holding recurrent matrices named ``weight_hh*`` (the scratch cells and the
fused ``nn.RNN/LSTM/GRU`` use torch's names: ``weight_hh_l{k}[_reverse]``, shape ``(G*H, H)`` with
one ``(H, H)`` block per gate). Each gate block ``W`` is set independently:

    default     the cell's own init (torch's U(-1/sqrt(H), 1/sqrt(H))), untouched
    orthogonal  W = scale * Q,  Q orthogonal (Saxe et al. 2014): every singular value = scale
    identity    W = scale * I   (IRNN, Le et al. 2015; meant for model=rnn model.nonlinearity=relu)
    scaled      W = W0 * scale / rho(W0): the default init rescaled to spectral radius ``scale``
    normal      every weight of the stack (input and recurrent) ~ N(0, scale^2), every bias 0:
                d2l's from-scratch init (scale 0.01), not limited to the recurrent blocks

For a linearised recurrence the Jacobian dh_t/dh_{t-1} ~ diag(act') W, so ``scale`` > 1 makes
gradients grow like scale^lag (exploding) and < 1 makes them shrink (vanishing): the knob the
long-range study turns to show both.
"""

from __future__ import annotations

import torch
from torch import nn

from seqbench.errors import ConfigError, choice_error

SCHEMES = ("default", "orthogonal", "identity", "scaled", "normal")


def recurrent_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The ``weight_hh*`` matrices of a module, by name."""
    return [(name, p) for name, p in module.named_parameters() if name.split(".")[-1].startswith("weight_hh")]


def check_scheme(scheme: str, scale: float) -> None:
    if scheme not in SCHEMES:
        raise choice_error("task.recurrent_init", scheme, SCHEMES)
    if not float(scale) > 0:
        raise ConfigError(f"task.recurrent_scale={scale} must be > 0")


@torch.no_grad()
def init_recurrent(module: nn.Module, scheme: str = "default", scale: float = 1.0) -> int:
    """Initialise every gate block of every ``weight_hh*`` matrix (see the module docstring);
    returns how many blocks were set (0 for ``default``)."""
    check_scheme(scheme, scale)
    if scheme == "default":
        return 0
    if scheme == "normal":  # all weights and biases, by name (torch's and the scratch cells' layout)
        count = 0
        for name, p in module.named_parameters():
            if name.split(".")[-1].startswith("weight"):
                nn.init.normal_(p, 0.0, scale)
                count += 1
            elif name.split(".")[-1].startswith("bias"):
                nn.init.zeros_(p)
        return count
    weights = recurrent_weights(module)
    if not weights:
        raise ConfigError(f"task.recurrent_init={scheme}: the model has no recurrent matrix named weight_hh*")
    count = 0
    for _, w in weights:
        H = w.shape[1]
        for k in range(w.shape[0] // H):
            block = w[k * H:(k + 1) * H]
            if scheme == "orthogonal":
                q = nn.init.orthogonal_(torch.empty(H, H, dtype=torch.float64))
                block.copy_(scale * q)
            elif scheme == "identity":
                block.copy_(scale * torch.eye(H))
            else:  # scaled
                rho = torch.linalg.eigvals(block.double()).abs().max()
                block.mul_(scale / float(rho))
            count += 1
    return count


def spectral_radius(module: nn.Module) -> float:
    """Largest |eigenvalue| over the gate blocks of the module's recurrent matrices."""
    radii = []
    for _, w in recurrent_weights(module):
        H = w.shape[1]
        radii += [float(torch.linalg.eigvals(w[k * H:(k + 1) * H].detach().double()).abs().max())
                  for k in range(w.shape[0] // H)]
    return max(radii) if radii else float("nan")
