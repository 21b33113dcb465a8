"""Row labels of report tables: a row never averages different settings together. Rows are named
by the config groups that vary (cell, tokenizer, ...) plus, where one name covers several
configurations, the override values that tell them apart (``rnn, length=50``)."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from omegaconf import DictConfig, OmegaConf

#: config groups a table's rows are named by, when they vary
ROW_AXES = ("model", "tokenizer", "embedding", "decoding")
#: top-level override keys that are config groups: a label names the option, not its keys
GROUP_KEYS = ("task", "data", "tokenizer", "embedding", "model", "decoding", "trainer", "logger", "paths")


def row_label(cfg: DictConfig, axes: list[str]) -> str:
    """The names of ``axes`` (``gru / bpe``); a task that ignores the model group
    (``trained_by_gradient`` False: ``task=ngram``) shows its own name in the model's place."""
    from hydra.utils import get_class

    model_free = not get_class(cfg.task._target_).trained_by_gradient
    names = [cfg.task.name if a == "model" and model_free else cfg[a].name for a in axes or ["model"]]
    return " / ".join(str(n) for n in names)


def _short(key: str) -> str:
    return key.split(".")[-1]


def _override_keys(items, exclude: tuple[str, ...]) -> list[str]:
    """Override keys that can change results (not seed, groups, output-only keys or ``exclude``)."""
    from seqbench.tracking import OUTPUT_ONLY_KEYS, OUTPUT_ONLY_TRAINER_KEYS

    skip = {"seed", *GROUP_KEYS, *OUTPUT_ONLY_KEYS, *(f"trainer.{k}" for k in OUTPUT_ONLY_TRAINER_KEYS), *exclude}
    keys = []
    for e in items:
        for o in e.overrides:
            key = o.split("=", 1)[0].lstrip("+~")
            if key not in keys and key not in skip and key.split(".")[0] not in OUTPUT_ONLY_KEYS:
                keys.append(key)
    return keys


def varying_settings(items, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Per config hash, ``key=value`` for each override key whose value varies among ``items``
    (``seed``, config groups and ``exclude`` aside; None = not applicable, never shown). A key whose
    most common value holds a majority is shown only where it deviates from it
    (``recurrent_init=scaled`` on the one exploding RNN); a key without a majority value (a swept
    axis such as ``data.length``) is shown everywhere."""
    keys = _override_keys(items, exclude)
    values = {k: [OmegaConf.select(e.cfg, k) for e in items] for k in keys}
    shown = {}
    for k, vs in values.items():
        counts = Counter(str(v) for v in vs if v is not None)
        if len(counts) < 2:
            continue
        top, n = counts.most_common(1)[0]
        shown[k] = top if n > sum(counts.values()) / 2 else None      # None: show every value
    return {e.hash: [f"{_short(k)}={values[k][i]}" for k, top in shown.items()
                     if values[k][i] is not None and (top is None or str(values[k][i]) != top)]
            for i, e in enumerate(items)}


def distinct_labels(items, base: Callable, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Label per config hash: ``base(e)`` where it names one configuration (seeds and ``exclude``
    aside), else ``base(e)`` plus the :func:`varying_settings` that tell its configurations apart,
    so rows never average different settings together (``rnn, length=50, gradient_clip_val=0``)."""
    groups: dict[str, list] = {}
    for e in items:
        groups.setdefault(base(e), []).append(e)
    labels = {}
    for label, group in groups.items():
        keys = _override_keys(group, exclude)
        configs = {tuple(str(OmegaConf.select(e.cfg, k)) for k in keys) for e in group}
        settings = varying_settings(group, exclude) if len(configs) > 1 else {e.hash: [] for e in group}
        labels.update({e.hash: ", ".join([label, *settings[e.hash]]) for e in group})
    return labels
