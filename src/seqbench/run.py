"""The one function: a resolved config -> a trained, evaluated, tracked run.

    validate -> data -> tokenizer -> datamodule -> model -> [MLflow run: fit -> test -> generate]

Everything that can fail on bad input (config values, missing/empty corpus, tokenizer) runs
before the MLflow run is created, so a rejected config leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from seqbench.callbacks import DivergenceMonitor, TimeToBest
from seqbench.errors import instantiate
from seqbench.generation import generate_samples
from seqbench.tokenizers import train_or_load
from seqbench.protocol import protocol
from seqbench.tracking import NullTracker, run_name, tracker_for
from seqbench.validate import validate

log = logging.getLogger("seqbench")


def quiet() -> None:
    """Quiet logs: progress bar + final summary only."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                ".*LightningDataModule.*", ".*`isinstance.*treespec.*", ".*Checkpoint directory.*exists.*",
                # eval metrics are computed from sums already reduced over ranks (SumMetric)
                ".*It is recommended to use `self.log\\('(val|test)/.*sync_dist=True.*",
                ".*It is recommended to use `self.log\\('train/tokens_per_s.*",
                # a machine with SLURM's tools where this run was not started by srun: nothing to do
                ".*The `srun` command is available on your system but is not used.*"):
        warnings.filterwarnings("ignore", message=msg)
    import datasets

    datasets.disable_progress_bars()  # encoding a split (datasets.map) takes a second, no bar


class ProgressBar(RichProgressBar):
    """Rich progress bar without the logger's version number."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def scalars(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's run directory when launched by Hydra, else a fresh folder under paths.output_dir."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    path = Path(cfg.paths.output_dir) / "runs" / uuid.uuid4().hex[:12]
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_tracker(cfg: DictConfig):
    """MLflow on global rank 0 only: exactly one run per invocation, also under DDP."""
    if cfg.logger.name == "none" or rank_zero_only.rank != 0:
        return NullTracker()
    return tracker_for(cfg)


def selection(cfg: DictConfig) -> tuple[str, str]:
    """The validation metric that chooses the checkpoint and stops training (``selection=<name>``:
    ``val/<name>``, default ``val/loss``) and its direction, as the task declares it."""
    name = cfg.get("selection", "loss")
    return f"val/{name}", get_class(cfg.task._target_).selection_metrics[name]


def best_metric(cfg: DictConfig) -> tuple[str, str]:
    """The name under which a run logs its selection metric's best value (``val/best_loss``,
    ``val/best_accuracy``...) and its direction: what tuning and reports rank runs by."""
    monitor, direction = selection(cfg)
    return monitor.replace("val/", "val/best_", 1), direction


def early_stopping(cfg: DictConfig) -> EarlyStopping | None:
    """Lightning's EarlyStopping on the selection metric when ``early_stopping.patience`` is set:
    training ends once it has not improved by ``min_delta`` for ``patience`` epochs (else: the budget).
    None for a task not trained by gradient (``task=ngram``): one pass, nothing to stop."""
    early = cfg.get("early_stopping") or {}
    if early.get("patience") is None or not get_class(cfg.task._target_).trained_by_gradient:
        return None
    monitor, mode = selection(cfg)
    # strict=False: a step budget (trainer.max_steps) can end training before the first validation;
    # then there is nothing to stop on and the run ends unconverged. The monitor's name itself is
    # checked by selection() against what the task declares.
    return EarlyStopping(monitor=monitor, mode=mode, patience=int(early.patience),
                         min_delta=float(early.get("min_delta", 0.0)), strict=False)


def build(cfg: DictConfig):
    """Data, tokenizer, datamodule and LightningModule for a validated config.

    The task class names its datamodule class, which says what the tokenizer trains on (the
    training split only, as the task reads it) and which extra arguments the module needs."""
    corpus = instantiate(cfg.data)()
    datamodule_class = get_class(cfg.task._target_).datamodule_class
    train_texts = datamodule_class.tokenizer_texts(corpus)
    tokenizer = train_or_load(instantiate(cfg.tokenizer), train_texts, cfg.paths.cache_dir)
    datamodule = datamodule_class.from_config(cfg, corpus, tokenizer)
    module = instantiate(cfg.task, vocab_size=tokenizer.vocab_size, model=OmegaConf.to_container(cfg.model),
                         embedding=OmegaConf.to_container(cfg.embedding),
                         optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                         scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True), **datamodule.task_kwargs(),
                         _recursive_=False, _convert_="all")
    if (embedding := getattr(module, "embedding", None)) is not None:  # none for task=ngram (counts)
        embedding.prepare(tokenizer, train_texts, cfg.paths.cache_dir)  # word2vec: train/load vectors
    return corpus, tokenizer, datamodule, module


def run(cfg: DictConfig) -> dict:
    """Train, evaluate and track one run; return its final metrics (and ``run_id``)."""
    quiet()
    validate(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    tracker = make_tracker(cfg)
    if cfg.get("skip_finished") and (done := tracker.find_finished(cfg)) is not None:
        print(f"skipped: FINISHED run {done['run_id']} has this config_hash ({done['config_hash']}), "
              f"code_version {done['code_version']}")
        return done
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    corpus, tokenizer, datamodule, module = build(cfg)
    out = output_dir(cfg)
    started = time.perf_counter()

    with tracker.active(cfg):
        # the run's description in the MLflow UI: what a reader needs to judge its numbers
        tracker.set_tags({"mlflow.note.content": f"{run_name(cfg)}: {protocol(cfg, [cfg.seed])}"})
        embedding = getattr(module, "embedding", None)
        if embedding is not None and (coverage := embedding.report()):  # pretrained vectors: coverage (OOV)
            tracker.log_metrics(coverage)
        monitor, mode = selection(cfg)
        checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor=monitor, mode=mode,
                                     save_last=True, filename="best", auto_insert_metric_name=False)
        clock = TimeToBest(monitor, mode)
        callbacks = [checkpoint, DivergenceMonitor(cfg.get("max_loss", 1e4)), clock]
        stopper = early_stopping(cfg)
        if stopper is not None:
            callbacks.append(stopper)
        if cfg.trainer.get("enable_progress_bar", True):
            callbacks.append(ProgressBar(leave=False))
        trainer: pl.Trainer = instantiate(cfg.trainer, logger=tracker.lightning_logger(),
                                          callbacks=callbacks, default_root_dir=str(out))
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics = scalars(trainer.callback_metrics)  # last epoch's train/val metrics
        metrics["epochs_trained"] = trainer.current_epoch
        if stopper is not None:  # converged: validation stopped improving before the budget ran out
            # (patience exhausted, also when validation runs several times an epoch: val_check_interval)
            metrics["converged"] = float(stopper.wait_count >= stopper.patience)
        best = checkpoint.best_model_path or None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
        metrics.update(scalars(trainer.callback_metrics))
        if checkpoint.best_model_score is not None:
            metrics[best_metric(cfg)[0]] = float(checkpoint.best_model_score)
        metrics["num_parameters"] = module.num_parameters()
        if (stack := getattr(module, "stack", None)) is not None:
            metrics["hidden_size"] = stack.hidden_size  # the one used (model.param_budget may choose it)
        metrics["wall_time_s"] = time.perf_counter() - started
        metrics["time_to_best_s"] = clock.seconds
        if trainer.is_global_zero:
            samples = generate_samples(cfg, module, tokenizer, train_text=datamodule.split_text("train")) \
                if module.generates else None
            if samples:
                metrics.update(samples["metrics"])
            primary, direction = module.primary_metric
            if primary in metrics:  # one column to sort a study's runs by (the tag says which metric it is)
                metrics["primary"] = metrics[primary]
                tracker.set_tags({"primary_metric": f"{primary} ({'lower' if direction == 'min' else 'higher'} is better)"})
            tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith(("sample/", "val/best")) or k in
                                 ("num_parameters", "hidden_size", "wall_time_s", "time_to_best_s", "epochs_trained", "converged",
                                  "primary")})
            if samples:
                tracker.log_text(samples["text"], "samples.txt")
            for path in module.artifacts():  # e.g. task=count: the loss surface with the trajectory
                tracker.log_artifact(path)
            tokenizer_path = out / "tokenizer.json"
            tokenizer.save(tokenizer_path)
            tracker.log_artifact(tokenizer_path)
            if tracker.log_checkpoint and best:
                tracker.log_artifact(best, "checkpoints")
    metrics["run_id"] = tracker.run_id
    if trainer.is_global_zero:
        print_summary(cfg, metrics, tracker, out)
    return metrics


def print_summary(cfg: DictConfig, metrics: dict, tracker, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"seqbench run {cfg.task.name}/{cfg.data.name}/{cfg.tokenizer.name}/"
                        f"{cfg.model.name}/s{cfg.seed}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in get_class(cfg.task._target_).summary_keys():
        if key in metrics:
            v = metrics[key]
            table.add_row(key, f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}")
    console = Console()
    console.print(table)
    console.print(f"outputs: {out}")
    if tracker.run_id:
        console.print(f"MLflow run id: {tracker.run_id}")
        console.print(f"open the UI:   {tracker.ui_command()}   (or: make ui)")
        console.print(f"then browse:   {tracker.runs_url()}")
