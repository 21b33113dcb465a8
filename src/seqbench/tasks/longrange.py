"""Long-range dependency tasks: the adding problem (regression) and copy memory (per-step recall).

Both read numbers, not text, so ``run.build``'s tokenizer is unused here (the datamodules give it a
tiny fixed text). What replaces the token embedding:

* adding: the inputs are real-valued pairs x_t = (u_t, m_t). They go to the recurrent stack as
  they are (:class:`RealInput`, ``dim = 2``): the stack's own input weights W_ih x_t *are* the
  input projection, and a separate ``Linear(2, d)`` in front would compose with W_ih into one
  linear map (more parameters, no more expressiveness). The ``embedding`` group does not apply.
* copy: the inputs are K + 2 discrete symbols (blank, K symbols, delimiter), so a token embedding
  is right; it is built by the ``embedding`` group (``learned`` or ``onehot``) over those K + 2
  symbols, not over the unused tokenizer's vocabulary.

Models and losses (unidirectional stack; h_T = top layer's state after the last step)::

    adding:  y^ = w . h_T + b,               L = (y^ - y)^2               baseline y^ = 1: MSE 1/6
    copy:    p(y_t | x_<=t) = softmax(W h_t + b) over {blank, 1..K},  L = mean_t CE_t
             baseline (memoryless): CE = copy_length * ln K / (delay + 2 * copy_length)

Both apply ``recurrent_init`` / ``recurrent_scale`` (:mod:`seqbench.init`) to the stack and carry
the gradient-flow probe (:class:`seqbench.metrics.gradients.GradientProbe`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from seqbench.data.longrange import AddingDataModule, CopyDataModule, CountDataModule, copy_baseline
from seqbench.errors import ConfigError
from seqbench.metrics.gradients import GradientProbe
from seqbench.models import Embedding
from seqbench.tasks.base import RecurrentTask

STAGES = ("train", "val", "test")


class RealInput(Embedding):
    """Real-valued input channels passed through: ``(B, T, channels) -> (B, T, channels)``.

    Stands where a token embedding stands; the first recurrent layer's W_ih projects it."""

    def __init__(self, channels: int, **_):
        super().__init__()
        self.dim = channels

    def forward(self, x: Tensor) -> Tensor:
        return x


class LongRangeTask(GradientProbe, RecurrentTask):
    """Shared by the long-range tasks: unidirectional stack, recurrent init, probe, throughput."""

    #: metric names accumulated in ``self.sums[f"{stage}_{name}"]`` (MeanMetric: exact under DDP)
    metric_names: tuple[str, ...] = ()
    #: which logged values show in the progress bar
    progress_keys: tuple[str, ...] = ("loss",)
    reads_text = False  # symbols and numbers drawn by the dataset: the tokenizer group is ignored
    unidirectional_because = ("the long-range tasks read the state left to right (and the gradient probe "
                              "steps through time)")
    #: ``embedding=`` options that apply to the task's inputs, and why others do not
    embeddings: tuple[str, ...] = ("learned", "onehot")
    embeddings_because: str = "its symbols are not text"

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.embedding.name not in cls.embeddings:
            raise ConfigError(f"embedding={cfg.embedding.name} does not apply to task={cfg.task.name} "
                              f"({cls.embeddings_because}); valid choices: {', '.join(cls.embeddings)}")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _epoch_end(self, stage: str) -> None:
        """Compute and reset the stage's running means, add the task's derived values, log them."""
        sums = [self.sums[f"{stage}_{k}"] for k in self.metric_names]
        if sums[0].update_count == 0:
            return
        values = {k: float(m.compute()) for k, m in zip(self.metric_names, sums)}
        for m in sums:
            m.reset()
        for k, v in self.epoch_values(stage, values).items():
            self.log(f"{stage}/{k}", v, prog_bar=k in self.progress_keys)

    def epoch_values(self, stage: str, values: dict[str, float]) -> dict[str, float]:
        """What to log for the stage from its running means (baselines, ratios, renames)."""
        return values

    def on_train_epoch_end(self):
        self._epoch_end("train")

    def on_validation_epoch_end(self):
        self._epoch_end("val")

    def on_test_epoch_end(self):
        self._epoch_end("test")


class AddingTask(LongRangeTask):
    """Adding problem: regress y = sum_t m_t u_t from the final state (see the module docstring).

    Metrics: ``{stage}/loss`` = ``{stage}/mse`` (mean over examples), and on val/test
    ``{stage}/baseline_mse`` (the trivial predictor y^ = 1 on the same examples, ~1/6) and
    ``{stage}/mse_ratio`` = mse / baseline_mse (< 1: the model beats the baseline).
    """

    datamodule_class = AddingDataModule
    generates = False
    embeddings = ("learned",)
    embeddings_because = ("its inputs are real-valued (value, marker) pairs fed straight to the recurrent "
                          "stack; keep the default embedding")
    primary_metric = ("test/mse", "min")
    secondary_metrics = ("test/mse_ratio", "test/baseline_mse")
    metric_names = ("mse", "baseline_mse")
    #: real-valued input channels per step: (value, marker)
    channels = 2
    progress_keys = ("mse",)

    @classmethod
    def stack_input_size(cls, cfg) -> int:
        return cls.channels  # RealInput: (value, marker)

    def __init__(self, vocab_size: int, model: dict, embedding: dict, optimizer: dict | None = None,
                 scheduler: dict | None = None, recurrent_init: str = "default", recurrent_scale: float = 1.0,
                 probe: bool = True, probe_batch_size: int = 32, **task_options):
        super().__init__(vocab_size, model, {"_target_": f"{__name__}.RealInput", "channels": self.channels},
                         optimizer, scheduler, recurrent_init, recurrent_scale)
        self.save_hyperparameters(logger=False)
        self.head = nn.Linear(self.stack.output_size, 1)
        self.sums = nn.ModuleDict({f"{s}_{k}": MeanMetric() for s in STAGES for k in self.metric_names})

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, 2) -> prediction (B,)."""
        out, _ = self.stack(self.embedding(x))
        return self.head(out[:, -1]).squeeze(-1)

    def probe_inputs(self, batch):
        y = batch["y"]
        return self.embedding(batch["x"]), lambda h: (self.head(h).squeeze(-1) - y) ** 2

    def _step(self, batch, stage: str) -> Tensor:
        y = batch["y"]
        se = (self(batch["x"]) - y) ** 2
        loss = se.mean()
        n = y.numel()
        self.sums[f"{stage}_mse"].update(se.detach())
        self.sums[f"{stage}_baseline_mse"].update((y - 1.0) ** 2)
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        return loss

    def epoch_values(self, stage, values):
        if stage == "train":
            return {}  # train/loss is logged per step and per epoch by _step
        return {**values, "loss": values["mse"], "mse_ratio": values["mse"] / values["baseline_mse"]}


class CopyTask(LongRangeTask):
    """Copy memory: predict the target symbol (blank or 1..K) at every step. Serves ``data=copy`` and
    ``data=selective_copy`` (the symbols at random positions; same targets and baseline formula, with
    ``delay`` = the sequence length - 2 * copy_length).

    Metrics: ``{stage}/loss`` (cross-entropy per step, over all steps), ``{stage}/recall_accuracy``
    (argmax accuracy on the ``copy_length`` recall steps only), and on val/test the memoryless
    baselines ``{stage}/baseline_loss`` (the formula above) and ``{stage}/baseline_recall_accuracy``
    = 1/K, plus ``{stage}/loss_ratio`` = loss / baseline_loss.
    """

    datamodule_class = CopyDataModule
    generates = False
    primary_metric = ("test/recall_accuracy", "max")
    secondary_metrics = ("test/loss", "test/baseline_loss", "test/baseline_recall_accuracy")
    selection_metrics = {"loss": "min", "recall_accuracy": "max"}
    metric_names = ("loss", "recall_accuracy")
    progress_keys = ("loss", "recall_accuracy")

    @classmethod
    def stack_input_size(cls, cfg) -> int:
        return cfg.embedding.get("dim") or int(cfg.data.num_symbols) + 2  # onehot: blank, K symbols, delimiter

    def __init__(self, vocab_size: int, model: dict, embedding: dict, num_symbols: int = 8,
                 copy_length: int = 10, delay: int = 100, optimizer: dict | None = None,
                 scheduler: dict | None = None, recurrent_init: str = "default", recurrent_scale: float = 1.0,
                 probe: bool = True, probe_batch_size: int = 32, **task_options):
        # inputs: blank 0, symbols 1..K, delimiter K+1 (the tokenizer's vocabulary is not used)
        super().__init__(num_symbols + 2, model, embedding, optimizer, scheduler, recurrent_init, recurrent_scale)
        self.save_hyperparameters(logger=False)
        self.head = nn.Linear(self.stack.output_size, num_symbols + 1)
        self.baseline = copy_baseline(num_symbols, copy_length, delay)
        self.sums = nn.ModuleDict({f"{s}_{k}": MeanMetric() for s in STAGES for k in self.metric_names})

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T) symbols -> logits (B, T, K + 1)."""
        out, _ = self.stack(self.embedding(x))
        return self.head(out)

    def probe_inputs(self, batch):
        y_last = batch["y"][:, -1]
        return self.embedding(batch["x"]), lambda h: F.cross_entropy(self.head(h), y_last, reduction="none")

    def _step(self, batch, stage: str) -> Tensor:
        y, L = batch["y"], self.hparams.copy_length
        logits = self(batch["x"])
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        loss = ce.mean()
        correct = (logits[:, -L:].argmax(-1) == y[:, -L:]).float()
        self.sums[f"{stage}_loss"].update(ce.detach())
        self.sums[f"{stage}_recall_accuracy"].update(correct)
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,
                     batch_size=y.shape[0])
        return loss

    def epoch_values(self, stage, values):
        if stage == "train":  # train/loss is logged per step and per epoch by _step
            return {"recall_accuracy": values["recall_accuracy"]}
        return {**values, "baseline_loss": self.baseline, "loss_ratio": values["loss"] / self.baseline,
                "baseline_recall_accuracy": 1.0 / self.hparams.num_symbols}


class CountTask(AddingTask):
    """Counting ones as regression (Roelants 2015, "How to implement a recurrent neural network, part 1"): read the bits x_t in {0, 1} one per step and
    predict their count y = sum_t x_t, MSE. ``readout: state`` predicts with the final state
    itself, y^ = s_T (one unit: with ``model=linear`` the model is exactly s_t = w_x x_t + w_rec s_{t-1},
    two parameters, optimum w_x = w_rec = 1); ``readout: linear`` puts the usual head on top.

    Besides val/test ``mse``, ``baseline_mse`` (the mean predictor y = T/2: T/4) and ``mse_ratio``,
    it logs the training dynamics the seed plots: every scalar parameter per step (``param/<name>``,
    the trajectory), the gradient norm per step before clipping (``grad/norm``) and at the initial
    point (``grad/initial_norm``), and for the two-parameter model the loss surface over
    (w_x, w_rec) with the trajectory drawn on it (artifact ``loss_surface.png``)."""

    datamodule_class = CountDataModule
    READOUTS = ("state", "linear")
    channels = 1  # the bit

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        readout = cfg.task.get("readout", "linear")
        if readout not in cls.READOUTS:
            from seqbench.errors import choice_error
            raise choice_error("task.readout", readout, cls.READOUTS)
        if readout == "state" and (cfg.model.get("param_budget") is None and int(cfg.model.hidden_size) != 1):
            raise ConfigError(f"task.readout=state predicts with the final state itself: it needs "
                              f"model.hidden_size=1 (got {cfg.model.hidden_size}); or use task.readout=linear")

    def __init__(self, vocab_size: int, model: dict, embedding: dict, optimizer: dict | None = None,
                 scheduler: dict | None = None, recurrent_init: str = "default", recurrent_scale: float = 1.0,
                 probe: bool = True, probe_batch_size: int = 32, readout: str = "linear", **task_options):
        super().__init__(vocab_size, model, embedding, optimizer, scheduler, recurrent_init, recurrent_scale,
                         probe, probe_batch_size)
        self.save_hyperparameters(logger=False)
        if readout == "state":  # y^ = s_T: no head parameters
            self.head = nn.Identity()
        self.trajectory: list[dict[str, float]] = []   # scalar parameters before each step
        self.grad_norms: list[float] = []
        self.artifact_paths: list = []

    def _step(self, batch, stage: str) -> Tensor:
        y = batch["y"]
        se = (self(batch["x"]) - y) ** 2
        self.sums[f"{stage}_mse"].update(se.detach())
        self.sums[f"{stage}_baseline_mse"].update((y - batch["x"].shape[1] / 2) ** 2)  # predict T/2
        if stage == "train":
            self.log("train/loss", se.mean(), on_step=True, on_epoch=True, prog_bar=True, batch_size=y.numel())
        return se.mean()

    def scalars(self) -> dict[str, float]:
        return {n: float(p.detach()) for n, p in self.stack.named_parameters() if p.numel() == 1}

    def on_train_batch_start(self, batch, batch_idx):
        self.trajectory.append(self.scalars())

    def on_after_backward(self):
        norm = float(sum(p.grad.double().pow(2).sum() for p in self.parameters() if p.grad is not None) ** 0.5)
        if not self.grad_norms:
            self.log("grad/initial_norm", norm, on_step=True, on_epoch=False)
        self.grad_norms.append(norm)
        self.log("grad/norm", norm, on_step=True, on_epoch=False)
        for name, value in self.trajectory[-1].items():
            self.log(f"param/{name}", value, on_step=True, on_epoch=False)

    def on_fit_end(self):
        self.trajectory.append(self.scalars())
        if self.grad_norms and self.logger is not None:  # the end point is the latest param/* value
            self.logger.log_metrics({"grad/initial_norm": self.grad_norms[0], "grad/max_norm": max(self.grad_norms),
                                     **{f"param/{k}": v for k, v in self.trajectory[-1].items()}},
                                    step=self.global_step)
        params = list(self.trajectory[-1])
        if len(params) == 2 and sum(p.numel() for p in self.parameters()) == 2 and self.trainer.is_global_zero:
            from pathlib import Path

            from seqbench.metrics.counting import plot_loss_surface

            x, y = self.trainer.datamodule.data["train"]
            path = Path(self.trainer.default_root_dir) / "loss_surface.png"
            plot_loss_surface(x[..., 0].double(), y.double(), [(t[params[0]], t[params[1]]) for t in self.trajectory],
                              path, title=f"counting {x.shape[1]} bits")
            self.artifact_paths.append(path)

    def artifacts(self) -> list:
        return list(self.artifact_paths)
