"""Closed forms of the two-parameter linear RNN s_t = w_x x_t + w_rec s_{t-1}, s_0 = 0 (Roelants 2015, "How to implement a recurrent neural network, part 1"):

    s_T        = w_x * sum_{k=1}^{T} w_rec^(T-k) x_k
    ds_T/dw_x  = sum_k w_rec^(T-k) x_k                     = s_T / w_x
    ds_T/dw_rec = w_x * sum_k (T-k) w_rec^(T-k-1) x_k       (powers of w_rec up to T - 1)

and of the MSE L = mean_n (s_T^(n) - y^(n))^2: dL/dw = mean_n 2 (s_T - y) ds_T/dw. For
|w_rec| > 1 the last gradient grows like w_rec^T (exploding), for |w_rec| < 1 it shrinks (vanishing):
the loss surface is a cliff along w_rec, which is why the seed trains it with Rprop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def final_state(bits: Tensor, w_x, w_rec) -> Tensor:
    """s_T of every sequence, bits (N, T); w_x, w_rec scalars or broadcastable grids (..., 1)."""
    T = bits.shape[-1]
    powers = torch.as_tensor(w_rec, dtype=bits.dtype)[..., None] ** torch.arange(T - 1, -1, -1, dtype=bits.dtype)
    return torch.as_tensor(w_x, dtype=bits.dtype)[..., None] * (powers[..., None, :] * bits).sum(-1)


def mse_gradient(bits: Tensor, y: Tensor, w_x: float, w_rec: float) -> tuple[float, float]:
    """(dL/dw_x, dL/dw_rec) of L = mean (s_T - y)^2 in closed form."""
    T = bits.shape[-1]
    k = torch.arange(T - 1, -1, -1, dtype=bits.dtype)                 # T - k for k = 1..T
    residual = final_state(bits, w_x, w_rec) - y
    ds_dwx = (w_rec ** k * bits).sum(-1)
    ds_dwrec = w_x * (k * torch.where(k > 0, torch.as_tensor(w_rec, dtype=bits.dtype) ** (k - 1),
                                      torch.zeros_like(k)) * bits).sum(-1)
    return float((2 * residual * ds_dwx).mean()), float((2 * residual * ds_dwrec).mean())


def plot_loss_surface(bits: Tensor, y: Tensor, trajectory: list[tuple[float, float]], path: str | Path,
                      title: str = "") -> Path:
    """log10 of the MSE over a (w_x, w_rec) grid around the trajectory, the trajectory on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = np.array(trajectory)
    lo = np.minimum(traj.min(0), 0.8) - 0.2
    hi = np.maximum(traj.max(0), 1.2) + 0.2
    wx, wrec = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    grid_x = torch.as_tensor(wx, dtype=bits.dtype)[..., None]
    grid_rec = torch.as_tensor(wrec, dtype=bits.dtype)[..., None]
    mse = ((final_state(bits, grid_x[..., 0], grid_rec[..., 0]) - y) ** 2).mean(-1).numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    contour = ax.contourf(wx, wrec, np.log10(mse + 1e-12), levels=30, cmap="viridis")
    fig.colorbar(contour, ax=ax, label="log10 MSE")
    ax.plot(traj[:, 0], traj[:, 1], "w.-", lw=1, ms=3, label="training trajectory")
    ax.plot(*traj[0], "ro", label=f"start ({traj[0][0]:.2f}, {traj[0][1]:.2f})")
    ax.plot(*traj[-1], "r*", ms=12, label=f"end ({traj[-1][0]:.4f}, {traj[-1][1]:.4f})")
    ax.set_xlabel("w_x")
    ax.set_ylabel("w_rec")
    ax.set_title(f"loss surface, {title}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
