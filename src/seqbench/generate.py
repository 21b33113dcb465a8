"""``python -m seqbench.generate run_id=<id> [decoding=beam decoding.beam_width=5] prompt="the dog"``

Continues a prompt with a trained language model and any decoding strategy, and prints the
texts. The model comes from a tracked run (its ``checkpoints/best.ckpt`` and ``tokenizer.json``
artifacts, read from the MLflow store of ``logger``) or from files
(``ckpt_path=/abs/best.ckpt tokenizer_path=/abs/tokenizer.json``). Config: ``conf/generate.yaml``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from seqbench.errors import ConfigError, instantiate
from seqbench.cli import hydra_entry


@dataclass
class Loaded:
    """A trained LM, its tokenizer, and the training run's resolved config (None from files)."""

    module: object
    tokenizer: object
    run_config: DictConfig | None = None
    run_name: str | None = None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_files(ckpt_path: str | Path, tokenizer_path: str | Path, device: str = "cpu",
               kind: str = "file") -> tuple[object, object]:
    """(LanguageModel in eval mode, TrainedTokenizer) from a Lightning checkpoint and tokenizer.json."""
    from tokenizers import Tokenizer

    from seqbench.tasks.lm import LanguageModel
    from seqbench.tokenizers import TrainedTokenizer

    for key, path in (("ckpt_path", ckpt_path), ("tokenizer_path", tokenizer_path)):
        if not Path(path).is_file():
            raise ConfigError(f"{key}={path} is not a file")
    module = LanguageModel.load_from_checkpoint(str(ckpt_path), weights_only=True,
                                                map_location=_device(device))
    return module.eval(), TrainedTokenizer(Tokenizer.from_file(str(tokenizer_path)), kind)


def load_model(cfg: DictConfig) -> Loaded:
    """The model named by ``cfg.run_id`` (MLflow artifacts) or ``cfg.ckpt_path`` + ``cfg.tokenizer_path``."""
    run_id, ckpt, tok = cfg.get("run_id"), cfg.get("ckpt_path"), cfg.get("tokenizer_path")
    device = cfg.get("device", "cpu")
    if run_id and (ckpt or tok):
        raise ConfigError("give either run_id=<id> or ckpt_path=... tokenizer_path=..., not both")
    if not run_id:
        if not (ckpt and tok):
            raise ConfigError("no model: give run_id=<MLflow run id>, or ckpt_path=/abs/best.ckpt "
                              "and tokenizer_path=/abs/tokenizer.json")
        module, tokenizer = load_files(ckpt, tok, device)
        return Loaded(module, tokenizer)
    if cfg.logger.name == "none":
        raise ConfigError(f"run_id={run_id} needs the MLflow store: use logger=mlflow, not logger=none")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from seqbench.tracking import quiet_mlflow

    quiet_mlflow()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(cfg.logger.tracking_uri)
    try:
        run = client.get_run(str(run_id))
    except MlflowException:
        raise ConfigError(f"run_id={run_id} not found in {cfg.logger.tracking_uri}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ckpt = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", tmp)
            tok = client.download_artifacts(run.info.run_id, "tokenizer.json", tmp)
        except (MlflowException, OSError):
            raise ConfigError(f"run_id={run_id} has no checkpoints/best.ckpt and tokenizer.json artifacts "
                              f"(was it trained with logger.log_checkpoint=true and did it finish?)") from None
        try:
            run_config = OmegaConf.load(client.download_artifacts(run.info.run_id, "config.yaml", tmp))
        except (MlflowException, OSError):
            run_config = None
        kind = run_config.tokenizer.name if run_config is not None else "file"
        module, tokenizer = load_files(ckpt, tok, device, kind)
    return Loaded(module, tokenizer, run_config, run.info.run_name)


def generate(cfg: DictConfig) -> list[str]:
    """Decode ``cfg.num_samples`` continuations of ``cfg.prompt``; return (and print) the texts."""
    from seqbench.generation import generate_texts, stop_token_id

    strategy = instantiate(cfg.decoding)  # bad parameters fail before the model is loaded
    loaded = load_model(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    gen = generate_texts(loaded.module, loaded.tokenizer, strategy, cfg.prompt, cfg.num_samples,
                         cfg.max_new_tokens, cfg.seed, stop_token_id(loaded.tokenizer, cfg.get("stop_token")))
    source = f"run_id={cfg.run_id}" if cfg.get("run_id") else f"ckpt_path={cfg.ckpt_path}"
    print(f"# decoding={strategy.name} prompt={cfg.prompt!r} seed={cfg.seed} {source}")
    print("\n---\n".join(t.rstrip("\n") for t in gen.texts))  # a stop token "\n" ends the line anyway
    return gen.texts


main = hydra_entry("seqbench.generate", "generate", generate)


if __name__ == "__main__":
    main()
