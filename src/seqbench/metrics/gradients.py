"""Gradient-flow probe: how much of the loss at the last step reaches the state ``lag`` steps back.

For a unidirectional :class:`~seqbench.cells.RecurrentStack`, inputs ``x (B, T, I)`` and the
per-example losses ``L_b`` read from the top layer's state at the last step, the probe returns

    g_h(lag) = mean_b || dL_b / dh_{T-1-lag} ||_2       lag = 0 .. T-1
    g_c(lag) = mean_b || dL_b / dc_{T-1-lag} ||_2       (LSTM family: the cell state; lag >= 1)

where ``h_t`` is the whole state after step t (every layer, ``(L, H)`` per example). It is exact
for any cell, fused or from scratch: the stack is run one step at a time with the state carried
(``stack(x[:, t:t+1], state)``), each step's state is kept, and ``torch.autograd.grad`` returns
dL/dh_t for all of them in one backward pass (the same as ``retain_grad`` on each state, without
touching the parameters' ``.grad``). For the linear scalar recurrence s_t = w s_{t-1} + u x_t with
L = s_{T-1}: dL/ds_t = w^(T-1-t), i.e. g_h(lag) = |w|^lag (the example of Roelants 2015, "How to implement a recurrent neural network, part 1"; see the tests).

For the xLSTM cells c is the packed memory (sLSTM ``[c | n | m]``, mLSTM ``[C | n | m]``) and g_c
its norm over all of it; mLSTM never feeds h_{t-1} back (``output_feeds_back = False``), so its
g_h is 0 beyond lag 0 and its memory shows in g_c alone.

A vanishing gradient shows as g_h decaying geometrically with lag (vanilla RNN, contractive
W_hh), an exploding one as geometric growth (W_hh with spectral radius > 1); the LSTM's additive
cell path keeps g_c flat while the forget gates stay open.

:class:`GradientProbe` makes a LightningModule run the probe on one fixed validation batch before
training (``grad/h_norm_init``, untrained) and at test time (``grad/h_norm``, the tested weights),
logging each curve as an MLflow metric history with ``step = lag`` plus a plot artifact
(``gradient_flow.png``); it also logs the global gradient norm of every training step before
clipping (``grad/norm``) and after it (``grad/clipped_norm``: the norm of the update's gradient).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

#: MLflow accepts at most 1000 metrics per log_batch call
_BATCH = 1000
#: norms are logged finite: an overflowing (exploding) curve is capped here
_CAP = 1e30


@dataclass
class GradientFlow:
    """One probe: gradient norms by lag (index = lag), for h and (LSTM family) c."""

    h_norm: np.ndarray
    c_norm: Optional[np.ndarray]
    loss: float

    @property
    def lags(self) -> np.ndarray:
        return np.arange(len(self.h_norm))

    def as_dict(self) -> dict:
        return {"h_norm": self.h_norm.tolist(), "loss": self.loss,
                "c_norm": None if self.c_norm is None else self.c_norm.tolist()}


def gradient_flow(stack, x: Tensor, loss_fn: Callable[[Tensor], Tensor], state=None) -> GradientFlow:
    """Probe ``stack`` on inputs ``x (B, T, I)`` (already embedded / projected).

    ``loss_fn(h_last) -> (B,)`` maps the top layer's state after the last step, ``(B, H)``, to
    per-example losses (the task's head and loss at the last step). The probe runs with dropout
    off and leaves the module's training flag and the parameters' gradients as they were.
    """
    if stack.bidirectional:
        raise ValueError("the gradient probe steps through time left to right: it needs a unidirectional stack")
    B, T, _ = x.shape
    if state is None:
        state = stack.initial_state(B, device=x.device, dtype=x.dtype)
    # a state that requires grad keeps every step in the graph, even with frozen parameters
    state = tuple(s.detach().requires_grad_() for s in state) if isinstance(state, tuple) \
        else state.detach().requires_grad_()
    was_training = stack.training
    stack.eval()
    hs, cs = [], []
    try:
        # cuDNN refuses backward in eval mode; the native kernels give the same numbers
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            for t in range(T):
                _, state = stack(x[:, t:t + 1], state)
                h, c = state if stack.has_cell_state else (state, None)
                hs.append(h)
                if c is not None:
                    cs.append(c)
            losses = loss_fn(hs[-1][-1])
            grads = torch.autograd.grad(losses.sum(), hs + cs, allow_unused=True)
    finally:
        stack.train(was_training)

    def norms(gs) -> np.ndarray:
        # per step: || dL_b / dh_t || over (layers, units), mean over the batch; index by lag
        per_step = [torch.zeros(()) if g is None else g.detach().double().transpose(0, 1).reshape(B, -1)
                    .norm(dim=1).mean().cpu() for g in gs]
        return np.array([float(v) for v in per_step[::-1]])

    c_norm = None
    if cs:
        # c_{T-1} reaches the loss only inside the last step (h = o * tanh(c)), never as a carried
        # state: the step-wise graph has no dL/dc at lag 0, so that point is left undefined
        c_norm = norms(grads[T:])
        c_norm[0] = np.nan
    return GradientFlow(norms(grads[:T]), c_norm, float(losses.detach().mean()))


def capped(values) -> list[tuple[int, float]]:
    """(lag, value) pairs to log: NaN (undefined) left out, overflow capped at 1e30."""
    return [(lag, float(min(v, _CAP))) for lag, v in enumerate(values) if not math.isnan(v)]


def log_flow(client, run_id: str, flow: GradientFlow, suffix: str = "") -> None:
    """Metric histories ``grad/h_norm{suffix}`` (and ``grad/c_norm{suffix}``), step = lag, plus
    ``grad/h_norm_ratio{suffix}`` = g_h(T-1) / g_h(0): the decay (< 1) or growth over the window."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"grad/h_norm{suffix}", v, now, lag) for lag, v in capped(flow.h_norm)]
    if flow.c_norm is not None:
        metrics += [Metric(f"grad/c_norm{suffix}", v, now, lag) for lag, v in capped(flow.c_norm)]
    h0 = flow.h_norm[0]
    ratio = flow.h_norm[-1] / h0 if h0 > 0 else float("nan")
    if not math.isnan(ratio):
        metrics.append(Metric(f"grad/h_norm_ratio{suffix}", min(ratio, _CAP), now, 0))
    for i in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + _BATCH])


def plot_flows(flows: dict[str, GradientFlow], path: Path, title: str = "") -> Path:
    """g_h (solid) and g_c (dashed) against lag, log scale, one colour per curve label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (label, flow) in enumerate(flows.items()):
        colour = f"C{i}"
        ax.plot(flow.lags, np.clip(flow.h_norm, 1e-30, _CAP), color=colour, label=f"{label}: ‖∂L/∂h‖")
        if flow.c_norm is not None:
            ax.plot(flow.lags, np.clip(flow.c_norm, 1e-30, _CAP), color=colour, linestyle="--",
                    label=f"{label}: ‖∂L/∂c‖")
    ax.set_yscale("log")
    ax.set_xlabel("lag T − t (steps before the loss)")
    ax.set_ylabel("mean gradient norm")
    ax.set_title(title or "gradient flow", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def total_norm(parameters) -> float:
    """Global L2 norm of the parameters' gradients (what clipping by norm compares to its value)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


class GradientProbe:
    """LightningModule mixin: gradient-flow curves before training and at test, clip norms per step.

    The task provides :meth:`probe_inputs`: for a batch, the stack's inputs ``(B, T, I)`` and
    ``loss_fn(h_last) -> (B,)``. ``probe=False`` (an ``hparams`` entry) turns the curves off;
    ``probe_batch_size`` caps the examples probed. Curves go to the run's MLflow logger (none with
    ``logger=none``) and stay on the module as ``gradient_flows`` ({"init", "trained"}).
    """

    def probe_inputs(self, batch) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        raise NotImplementedError

    # -- the probe ----------------------------------------------------------------------------
    def _probe_enabled(self) -> bool:
        # a stack that carries no state (model=boe) has no path through time to measure
        return (bool(self.hparams.get("probe", True)) and self.trainer.is_global_zero
                and getattr(self.stack, "carries_state", True))

    def _probe_batch(self):
        if getattr(self, "_probe_cache", None) is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None:
                return None
            batch = next(iter(datamodule.val_dataloader()))
            n = int(self.hparams.get("probe_batch_size", 32))
            self._probe_cache = {k: v[:n] if torch.is_tensor(v) else v for k, v in batch.items()}
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self._probe_cache.items()}

    def run_probe(self, label: str) -> Optional[GradientFlow]:
        batch = self._probe_batch()
        if batch is None:
            return None
        was_training = self.training
        self.eval()
        # Lightning evaluates under inference mode: leave it, and copy the batch out of it
        try:
            with torch.inference_mode(False), torch.enable_grad():
                batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
                x, loss_fn = self.probe_inputs(batch)
                flow = gradient_flow(self.stack, x.detach(), loss_fn)
        finally:
            self.train(was_training)
        if not hasattr(self, "gradient_flows"):
            self.gradient_flows = {}
        self.gradient_flows[label] = flow
        logger = self._mlflow_logger()
        if logger is not None:
            log_flow(logger.experiment, logger.run_id, flow, "" if label == "trained" else f"_{label}")
            if label == "trained":
                self._log_flow_artifacts(logger)
        return flow

    def _mlflow_logger(self):
        from lightning.pytorch.loggers import MLFlowLogger

        return next((lg for lg in self.trainer.loggers if isinstance(lg, MLFlowLogger)), None)

    def _log_flow_artifacts(self, logger) -> None:
        title = f"gradient flow: {getattr(self.stack, 'cell', '')}, loss at the last step"
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_flows(self.gradient_flows, Path(tmp) / "gradient_flow.png", title)
            data = Path(tmp) / "gradient_flow.json"
            data.write_text(json.dumps({k: f.as_dict() for k, f in self.gradient_flows.items()}))
            for path in (png, data):
                logger.experiment.log_artifact(logger.run_id, str(path))

    # -- Lightning hooks (chained with super() so other mixins keep theirs) ---------------------
    def on_fit_start(self):
        super().on_fit_start()
        if self._probe_enabled():
            self.run_probe("init")

    def on_test_start(self):
        super().on_test_start()
        if self._probe_enabled():
            self.run_probe("trained")

    def on_before_optimizer_step(self, optimizer):
        super().on_before_optimizer_step(optimizer)
        self.log("grad/norm", total_norm(self.parameters()), on_step=True, on_epoch=False,
                 rank_zero_only=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm)
        self.log("grad/clipped_norm", total_norm(self.parameters()), on_step=True, on_epoch=False,
                 rank_zero_only=True)
