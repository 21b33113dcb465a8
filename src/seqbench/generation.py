"""Text generation with a decoding strategy, and the quality scores of the samples.

Shared by the training run (``generate_samples``, called by ``run.py`` after training), by
``python -m seqbench.generate`` and by ``python -m seqbench.compare_decoding``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from seqbench.decoding import DecodingStrategy
from seqbench.errors import ConfigError, instantiate
from seqbench.metrics.generation import ngram_set, nll_per_char, text_metrics


@dataclass
class Generation:
    """``num_samples`` continuations of one prompt: text and token ids, and the time it took."""

    prompt: str
    continuations: list[str]
    prompt_ids: torch.Tensor   # (B, P)
    new_ids: torch.Tensor      # (B, N), EOS-padded after a sample's end
    new_tokens: int            # generated tokens, up to and including each sample's EOS
    seconds: float
    eos_id: int | None = None

    @property
    def texts(self) -> list[str]:
        return [self.prompt + c for c in self.continuations]

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else math.inf


def stop_token_id(tokenizer, stop_token: str | None) -> int | None:
    """The id of ``stop_token`` (a text that is exactly one token, e.g. a line break), or None.
    The escapes ``\\n`` and ``\\t`` are read as line break and tab (shells and Hydra keep them literal)."""
    if stop_token is None or stop_token == "":
        return None
    stop_token = str(stop_token).replace("\\n", "\n").replace("\\t", "\t")
    ids = tokenizer.encode(stop_token)
    if len(ids) != 1 or ids[0] == tokenizer.unk_id:
        raise ConfigError(f"stop_token={stop_token!r} must be one known token of the tokenizer "
                          f"(it encodes to {ids}); use null for no stop token")
    return ids[0]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(f"prompt={prompt!r} must be non-empty: the model continues a given text")
    return ids


@torch.no_grad()
def generate_texts(module, tokenizer, strategy: DecodingStrategy, prompt: str, num_samples: int,
                   max_new_tokens: int, seed: int, eos_id: int | None = None) -> Generation:
    """Decode ``num_samples`` continuations of ``prompt`` in one batch (seeded generator)."""
    if int(num_samples) < 1:
        raise ConfigError(f"num_samples={num_samples} must be >= 1")
    device = module.device
    ids = torch.tensor([encode_prompt(tokenizer, prompt)] * int(num_samples), device=device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    module.eval()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    new = strategy.generate(module, ids, int(max_new_tokens), generator=generator, eos_id=eos_id)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    rows, count = [], 0
    for row in new.tolist():
        if eos_id is not None and eos_id in row:
            row = row[:row.index(eos_id) + 1]
        count += len(row)
        rows.append(tokenizer.decode(row))
    return Generation(prompt, rows, ids, new, count, seconds, eos_id)


def score(module, gen: Generation, train_ngrams: set | None = None, grammar: bool = False) -> dict:
    """Quality metrics of a generation (see ``seqbench.metrics.generation``), keys without prefix."""
    m = {"nll_per_char": nll_per_char(module, gen.prompt_ids, gen.new_ids,
                                      [len(c) for c in gen.continuations], gen.eos_id)}
    m.update(text_metrics(gen.continuations, gen.texts, train_ngrams, grammar))
    m["tokens_per_s"] = gen.tokens_per_s
    return m


def has_grammar(data: DictConfig) -> bool:
    """Whether the dataset class declares a grammar its samples can be checked against."""
    from hydra.utils import get_class

    return bool(getattr(get_class(data._target_), "has_grammar", False))


def generate_samples(cfg: DictConfig, module, tokenizer, train_text: str | None = None) -> dict:
    """Generate ``task.generate.num_samples`` continuations of the prompt with ``cfg.decoding``
    and score them. ``train_text`` (the training split as one text) enables the copy metric.

    Returns ``{"text": samples.txt content, "metrics": {"sample/<metric>": value}, "texts": [...]}``.
    """
    gen_cfg = cfg.task.generate
    strategy = instantiate(cfg.decoding)
    eos_id = stop_token_id(tokenizer, gen_cfg.get("stop_token"))
    gen = generate_texts(module, tokenizer, strategy, gen_cfg.prompt, gen_cfg.num_samples,
                         gen_cfg.max_new_tokens, cfg.seed, eos_id)
    train_ngrams = ngram_set(train_text) if train_text is not None else None
    metrics = score(module, gen, train_ngrams, grammar=has_grammar(cfg.data))
    metrics = {f"sample/{k}": float(v) for k, v in metrics.items() if math.isfinite(v)}
    header = f"# decoding={strategy.name} prompt={gen_cfg.prompt!r} seed={cfg.seed}\n"
    return {"text": header + "\n---\n".join(gen.texts) + "\n", "metrics": metrics, "texts": gen.texts}
