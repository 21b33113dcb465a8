"""``python -m seqbench.compare_decoding run_id=<id>``: every decoding strategy on one trained model.

Each strategy of ``conf/decoding/`` (or ``strategies=[greedy,beam]``) continues the same prompt
``num_samples`` times with the same seed; the samples are scored (``seqbench.metrics.generation``)
and timed. The table is printed and tracked as a new MLflow run tagged ``task=decode``,
``source_run_id=<id>``, ``decoding=<strategies>``, with metrics ``<strategy>/<metric>``, the table as
artifact ``decoding_comparison.md`` and the samples as ``samples/<strategy>.txt``. No retraining.
Config: ``conf/compare_decoding.yaml``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

import torch
from omegaconf import DictConfig, OmegaConf

from seqbench.errors import SeqbenchError, choice_error, instantiate
from seqbench.cli import hydra_entry
from seqbench.validate import CONF_DIR, group_options

log = logging.getLogger("seqbench")

#: table columns: (metric key, header, format)
COLUMNS = [("nll_per_char", "NLL/char", ".3f"), ("distinct_1", "dist-1", ".3f"),
           ("distinct_2", "dist-2", ".3f"), ("distinct_3", "dist-3", ".3f"),
           ("repetition_4", "rep-4", ".3f"), ("self_bleu", "self-BLEU", ".1f"),
           ("copy_4", "copy-4", ".3f"), ("grammatical_rate", "grammatical", ".3f"),
           ("sentences", "sentences", ".0f"),
           ("mean_words", "words", ".1f"), ("tokens_per_s", "tokens/s", ",.0f")]


def strategy_names(cfg: DictConfig) -> list[str]:
    valid = group_options("decoding")
    names = list(cfg.strategies) if cfg.get("strategies") else valid
    for name in names:
        if name not in valid:
            raise choice_error("strategy", name, valid)
    return names


def load_strategy(name: str):
    return instantiate(OmegaConf.load(CONF_DIR / "decoding" / f"{name}.yaml"))


def describe(strategy) -> str:
    """``beam_width=5, alpha=1.0`` — the parameters of a strategy, without its name."""
    return ", ".join(f"{k}={v}" for k, v in asdict(strategy).items() if k != "name")


def train_ngrams_of(run_config: DictConfig | None):
    """Word 4-grams of the parent run's training split (rebuilt from its config), or None."""
    from seqbench.data.lm import LMDataModule
    from seqbench.metrics.generation import ngram_set

    if run_config is None:
        return None
    try:
        corpus = instantiate(run_config.data)()
    except (SeqbenchError, OSError) as e:
        log.warning("copy metric skipped: the training corpus could not be loaded (%s)", e)
        return None
    return ngram_set(LMDataModule.separator.join(corpus["train"]["text"]))


def markdown_table(rows: dict[str, dict], params: dict[str, str]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in m for m in rows.values())]
    lines = ["| strategy | parameters | " + " | ".join(h for _, h, _ in cols) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for name, m in rows.items():
        cells = [format(m[k], f) if k in m and math.isfinite(m[k]) else "–" for k, _, f in cols]
        lines.append(f"| {name} | {params[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(cfg: DictConfig) -> dict:
    """Run every strategy, print the table, log the decode run; return table, metrics, run id."""
    from seqbench.generate import load_model
    from seqbench.generation import generate_texts, has_grammar, score, stop_token_id
    from seqbench.decoding import Greedy

    names = strategy_names(cfg)
    strategies = {name: load_strategy(name) for name in names}  # bad YAML fails before any work
    loaded = load_model(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    module, tokenizer, run_config = loaded.module, loaded.tokenizer, loaded.run_config
    eos_id = stop_token_id(tokenizer, cfg.get("stop_token"))
    train_ngrams = train_ngrams_of(run_config)
    grammar = run_config is not None and has_grammar(run_config.data)
    generate_texts(module, tokenizer, Greedy(), cfg.prompt, 1, 4, cfg.seed)  # warm-up, untimed
    rows, samples = {}, {}
    for name, strategy in strategies.items():
        gen = generate_texts(module, tokenizer, strategy, cfg.prompt, cfg.num_samples, cfg.max_new_tokens,
                             cfg.seed, eos_id)
        rows[name] = score(module, gen, train_ngrams, grammar)
        samples[name] = f"# decoding={name} ({describe(strategy)}) prompt={cfg.prompt!r} seed={cfg.seed}\n" \
                        + "\n---\n".join(gen.texts) + "\n"
    params = {name: describe(s) or "–" for name, s in strategies.items()}
    source = f"run {cfg.run_id}" if cfg.get("run_id") else f"checkpoint {cfg.ckpt_path}"
    table = (f"# Decoding comparison\n\nModel: {source}"
             + (f" ({loaded.run_name})" if loaded.run_name else "")
             + f". Prompt {cfg.prompt!r}, {cfg.num_samples} samples × {cfg.max_new_tokens} new tokens per "
               f"strategy, seed {cfg.seed}, device {module.device}, {torch.get_num_threads()} thread(s). "
               f"Metrics: see `docs/decoding.md` (word n-grams over the continuations).\n\n"
             + markdown_table(rows, params))
    run_id = log_decode_run(cfg, names, rows, table, samples, loaded)
    print(table)
    if run_id:
        print(f"MLflow run id: {run_id}")
    return {"table": table, "metrics": rows, "run_id": run_id}


def log_decode_run(cfg: DictConfig, names: list[str], rows: dict, table: str, samples: dict,
                   loaded) -> str | None:
    """A new MLflow run beside the parent: tags, params, ``<strategy>/<metric>``, artifacts."""
    if cfg.logger.name == "none":
        return None
    from mlflow.entities import Param

    from seqbench.tracking import flatten, git_sha, tracker_for

    tracker = tracker_for(cfg)
    tags = {"task": "decode", "decoding": ",".join(names), "git_sha": git_sha()}
    if cfg.get("run_id"):
        tags["source_run_id"] = str(cfg.run_id)
    if tracker.parent_run_id:  # part of a decoding study: nested under its parent run
        tags["mlflow.parentRunId"] = tracker.parent_run_id
    if cfg.get("study"):
        tags["study"] = str(cfg.study)
    if loaded.run_config is not None:
        rc = loaded.run_config
        tags.update({k: str(rc[k].name) for k in ("data", "tokenizer", "model") if k in rc})
    name = f"decode/{loaded.run_name}" if loaded.run_name else "decode"
    run = tracker.client.create_run(tracker.experiment_id, run_name=name, tags=tags)
    tracker.run_id = run.info.run_id
    try:
        settings = {k: cfg.get(k) for k in ("run_id", "ckpt_path", "prompt", "num_samples",
                                            "max_new_tokens", "stop_token", "seed", "device")}
        settings.update({f"decoding.{n}": {k: v for k, v in asdict(load_strategy(n)).items() if k != "name"}
                         for n in names})
        tracker.client.log_batch(tracker.run_id, params=[Param(k, str(v)) for k, v in flatten(settings).items()])
        tracker.log_metrics({f"{n}/{k}": v for n, m in rows.items() for k, v in m.items() if math.isfinite(v)})
        tracker.log_text(table, "decoding_comparison.md")
        for n, text in samples.items():
            tracker.log_text(text, f"samples/{n}.txt")
    except BaseException as e:
        tracker.finish("FAILED", f"{type(e).__name__}: {e}")
        raise
    tracker.finish("FINISHED")
    return tracker.run_id


main = hydra_entry("seqbench.compare_decoding", "compare_decoding", compare)


if __name__ == "__main__":
    main()
