"""The protocol of a number: what a reader needs to judge it (data and split, budget, sizes,
optimizer, seeds, where the metric is measured). Printed above every report table and written as
each run's MLflow description (``mlflow.note.content``), so a figure never travels without it."""

from __future__ import annotations

from omegaconf import DictConfig


def protocol(cfg: DictConfig, seeds: list, tuned: tuple[str, ...] = ()) -> str:
    """What a reader needs to judge the numbers of one table; ``tuned``: the keys chosen per row on
    validation (a study's ``tune``), whose value in ``cfg`` is then not the table's. The task class
    says how its rows are trained (``Task.protocol``)."""
    from hydra.utils import get_class

    task_class = get_class(cfg.task._target_)
    parts = [f"task **{cfg.task.name}**, data **{cfg.data.name}**", *split(cfg.data), *task_class.protocol(cfg, tuned)]
    if tuned:
        parts.append(f"{', '.join(tuned)} chosen per row on validation at the tuning seed (see Tuning)")
    parts.append(f"seeds {seeds}; metrics on the held-out test split"
                 + (f" with the checkpoint of best val/{cfg.get('selection', 'loss')}" if task_class.trained_by_gradient else ""))
    return "; ".join(parts) + "."


def split(data: DictConfig) -> list[str]:
    """How a dataset is split into train, validation and test, from its config's keys."""
    if "num_train" in data:
        return [f"{data.num_train}/{data.get('num_val')}/{data.get('num_test')} generated train/val/test sentences"]
    parts = []
    if "num_folds" in data:
        parts.append(f"test fold {data.fold} of {data.num_folds} (seeded shuffle {data.shuffle_seed}), "
                     f"validation a seeded {data.val_fraction:.0%} of the other folds")
    elif "test_fraction" in data:
        parts.append(f"contiguous split, last {data.val_fraction + data.test_fraction:.0%} held out")
    elif "val_fraction" in data:
        parts.append(f"official test split, validation a seeded {data.val_fraction:.0%} of train")
    if data.get("train_phrases"):
        parts.append("trained on every labelled phrase of the training trees, validated and tested on sentences")
    return parts


def training(cfg: DictConfig, tuned: tuple[str, ...] = ()) -> list[str]:
    """How a gradient-trained row is trained: budget, early stopping, batch, model size, optimizer."""
    t, early = cfg.task, cfg.get("early_stopping") or {}
    every = cfg.trainer.get("val_check_interval")
    parts = [f"budget {cfg.trainer.max_epochs} epoch(s)"
             + (f", ≤{cfg.trainer.limit_train_batches} batches/epoch" if cfg.trainer.get("limit_train_batches") else "")
             + (f", validated every {every:g} epoch" if isinstance(every, float) and every < 1 else "")
             + (f", early stopping on val/{cfg.get('selection', 'loss')} (patience {early.patience} validations, "
                f"min_delta {early.min_delta})" if early.get("patience") is not None else ", no early stopping")]
    parts.append(f"batch {t.get('batch_size')}" + (f", bptt {t.bptt}" if "bptt" in t else ""))
    budget = cfg.model.get("param_budget")
    size = f"equal parameters: {budget} per stack" if budget is not None else f"hidden {cfg.model.hidden_size}"
    parts.append(f"{size}, {cfg.model.num_layers} layer(s), embedding "
                 f"{cfg.embedding.name} {cfg.embedding.get('dim', '')}")
    lr = "lr tuned per row" if "optimizer.lr" in tuned else f"lr {cfg.optimizer.lr}"
    parts.append(f"optimizer {cfg.optimizer.name} {lr}"
                 + (f", scheduler {cfg.scheduler.name}" if cfg.scheduler.name != "none" else "")
                 + f", clip {cfg.trainer.gradient_clip_val} ({cfg.trainer.gradient_clip_algorithm})")
    return parts


def samples(cfg: DictConfig) -> list[str]:
    """The generated samples a run writes after testing."""
    g = cfg.task.generate
    return [f"samples: {g.num_samples} x {g.max_new_tokens} tokens, decoding {cfg.decoding.name}, prompt {g.prompt!r}"]
