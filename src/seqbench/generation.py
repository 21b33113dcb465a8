"""Text generation after training: samples with the configured decoding strategy, and their scores."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from seqbench.errors import instantiate


def generate_samples(cfg: DictConfig, module, tokenizer) -> dict:
    """Generate ``task.generate.num_samples`` continuations of the prompt with ``cfg.decoding``."""
    from seqbench.data.synthetic import grammatical_rate

    gen_cfg = cfg.task.generate
    strategy = instantiate(cfg.decoding)
    generator = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    prompt_ids = tokenizer.encode(gen_cfg.prompt)
    prompt = torch.tensor([prompt_ids] * int(gen_cfg.num_samples), device=module.device)
    module.eval()
    new = strategy.generate(module, prompt, int(gen_cfg.max_new_tokens), generator=generator)
    texts = [gen_cfg.prompt + tokenizer.decode(row.tolist()) for row in new]
    metrics = {"sample/mean_chars": sum(map(len, texts)) / len(texts)}
    if cfg.data.name == "synthetic":
        rate, n = grammatical_rate("\n".join(texts))
        metrics.update({"sample/grammatical_rate": rate, "sample/sentences": n})
    header = f"# decoding={strategy.name} prompt={gen_cfg.prompt!r} seed={cfg.seed}\n"
    return {"text": header + "\n---\n".join(texts) + "\n", "metrics": metrics, "texts": texts}
