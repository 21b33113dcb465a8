"""The protocol of a number: what a reader needs to judge it (data and split, budget, sizes,
optimizer, seeds, where the metric is measured). Printed above every report table and written as
each run's MLflow description (``mlflow.note.content``), so a figure never travels without it."""

from __future__ import annotations

from omegaconf import DictConfig


def protocol(cfg: DictConfig, seeds: list, tuned: tuple[str, ...] = ()) -> str:
    """What a reader needs to judge the numbers of one table; ``tuned``: the keys chosen per row on
    validation (a study's ``tune``), whose value in ``cfg`` is then not the table's."""
    t = cfg.task
    parts = [f"task **{t.name}**, data **{cfg.data.name}**"]
    if "num_train" in cfg.data:
        parts.append(f"{cfg.data.num_train}/{cfg.data.get('num_val')}/{cfg.data.get('num_test')} "
                     "generated train/val/test sentences")
    elif "num_folds" in cfg.data:
        parts.append(f"test fold {cfg.data.fold} of {cfg.data.num_folds} (seeded shuffle {cfg.data.shuffle_seed}), "
                     f"validation a seeded {cfg.data.val_fraction:.0%} of the other folds")
    elif "test_fraction" in cfg.data:
        parts.append(f"contiguous split, last {cfg.data.val_fraction + cfg.data.test_fraction:.0%} held out")
    elif "val_fraction" in cfg.data:
        parts.append(f"official test split, validation a seeded {cfg.data.val_fraction:.0%} of train")
    if cfg.data.get("train_phrases"):
        parts.append("trained on every labelled phrase of the training trees, validated and tested on sentences")
    if t.name == "ngram":  # counts: no budget, model, embedding or optimizer
        parts.append(f"{t.order}-gram counts of the whole training split (one pass), {t.smoothing} smoothing"
                     + (f" (k {t.k})" if t.smoothing == "add_k" else f" (discount {t.discount or 'n1/(n1+2n2)'})")
                     + f", tokenizer {cfg.tokenizer.name}; evaluated on task=lm's windows ({t.eval_batch_size} "
                       "columns, context carried)")
        parts.append(f"seeds {seeds}; metrics on the held-out test split")
        return "; ".join(parts) + "."
    early = cfg.get("early_stopping") or {}
    parts.append(f"budget {cfg.trainer.max_epochs} epoch(s)"
                 + (f", ≤{cfg.trainer.limit_train_batches} batches/epoch" if cfg.trainer.get("limit_train_batches") else "")
                 + (f", early stopping on val/{cfg.get('selection', 'loss')} (patience {early.patience}, min_delta {early.min_delta})"
                    if early.get("patience") is not None else ", no early stopping"))
    parts.append(f"batch {t.get('batch_size')}" + (f", bptt {t.bptt}" if "bptt" in t else ""))
    if t.name in ("lm", "classify"):
        parts.append(f"tokenizer {cfg.tokenizer.name}")
    budget = cfg.model.get("param_budget")
    size = f"equal parameters: {budget} per stack" if budget is not None else f"hidden {cfg.model.hidden_size}"
    parts.append(f"{size}, {cfg.model.num_layers} layer(s), embedding "
                 f"{cfg.embedding.name} {cfg.embedding.get('dim', '')}")
    lr = "lr tuned per row" if "optimizer.lr" in tuned else f"lr {cfg.optimizer.lr}"
    parts.append(f"optimizer {cfg.optimizer.name} {lr}"
                 + (f", scheduler {cfg.scheduler.name}" if cfg.scheduler.name != "none" else "")
                 + f", clip {cfg.trainer.gradient_clip_val} ({cfg.trainer.gradient_clip_algorithm})")
    if t.name == "lm" and "generate" in t:
        parts.append(f"samples: {t.generate.num_samples} x {t.generate.max_new_tokens} tokens, "
                     f"decoding {cfg.decoding.name}, prompt {t.generate.prompt!r}")
    if tuned:
        parts.append(f"{', '.join(tuned)} chosen per row on validation at the tuning seed (see Tuning)")
    parts.append(f"seeds {seeds}; metrics on the held-out test split with the checkpoint of best val/{cfg.get('selection', 'loss')}")
    return "; ".join(parts) + "."
