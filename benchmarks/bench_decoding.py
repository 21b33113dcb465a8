"""Decoding throughput: generated tokens/s of every strategy on the same model and batch.

    python benchmarks/bench_decoding.py [--quick] [--threads N] [--device cpu|cuda]

Protocol: the default LSTM LM of ``conf/`` (``model=lstm``, ``embedding=learned``: 1 layer,
hidden 128, embedding 64) with random weights over a 32-token vocabulary (the size of the
synthetic corpus' character vocabulary), eval mode, ``torch.no_grad``. One batch of B prompts of
P tokens; every strategy generates N new tokens per prompt (no EOS, so every strategy runs all N
steps and beam search never stops early). One untimed warm-up per strategy, then R rounds that
time every strategy once each (interleaved, so load changes on a shared box hit all alike); the
median per strategy is reported. tokens/s = B·N / median time; "× greedy" = time per generated token
relative to greedy (the beam goal: width 5 costs at most 5× greedy per generated token).
Strategies use their ``conf/decoding/*.yaml`` defaults, plus beam widths 1, 2 and 10.
Writes ``benchmarks/results/decoding-<device>.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from seqbench.decoding import Beam
from seqbench.errors import instantiate
from seqbench.tasks.lm import LanguageModel
from seqbench.validate import CONF_DIR, group_options

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 32


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_model(device: torch.device) -> LanguageModel:
    torch.manual_seed(0)
    model = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "lstm.yaml"))
    embedding = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "embedding" / "learned.yaml"))
    return LanguageModel(VOCAB, model, embedding).to(device).eval()


def strategies() -> dict:
    first = ["greedy", "sample", "topk", "topp", "beam"]
    names = [n for n in first if n in group_options("decoding")]
    names += [n for n in group_options("decoding") if n not in first]
    out = {name: instantiate(OmegaConf.load(CONF_DIR / "decoding" / f"{name}.yaml")) for name in names}
    for width in (1, 2, 10):
        out[f"beam (width {width})"] = Beam(beam_width=width)
    return out


def timed(strategy, model, prompt, new_tokens, device) -> float:
    """Seconds for one ``generate`` call (synchronised on GPU)."""
    gen = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    strategy.generate(model, prompt, new_tokens, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(named: dict, model, prompt, new_tokens, repeats, device) -> dict[str, float]:
    """Median seconds per strategy over ``repeats`` rounds; each round times every strategy once
    (interleaved, so a load change on a shared machine hits all strategies alike)."""
    for strategy in named.values():  # warm-up
        timed(strategy, model, prompt, new_tokens, device)
    times = {name: [] for name in named}
    for _ in range(repeats):
        for name, strategy in named.items():
            times[name].append(timed(strategy, model, prompt, new_tokens, device))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats (a smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (default 1: per-step decoding of a few rows is latency-bound)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, P = args.batch, 4
    N, repeats = (50, 3) if args.quick else (200, 9)
    model = build_model(device)
    prompt = torch.randint(4, VOCAB, (B, P), generator=torch.Generator().manual_seed(0)).to(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    named = strategies()
    medians = measure(named, model, prompt, N, repeats, device)
    rows = [(name, named[name], seconds) for name, seconds in medians.items()]
    for name, _, seconds in rows:
        print(f"{name:16s} {B * N / seconds:10,.0f} tokens/s  ({seconds * 1e3:.1f} ms)", flush=True)
    greedy = next(s for n, _, s in rows if n == "greedy")
    beam5 = next(s for n, st, s in rows if n == "beam" and st.beam_width == 5)

    lines = [
        f"# Decoding throughput ({device.type})",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python benchmarks/bench_decoding.py"
        f"{' --quick' if args.quick else ''}`.",
        "",
        f"- machine: {cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}; "
        f"load average {load:.2f} when the run started (a shared box: other jobs inflate times)",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), device {device}",
        f"- model: default LSTM LM (1 layer, hidden 128, embedding 64), random weights, vocabulary {VOCAB}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters",
        f"- batch: B = {B} prompts of P = {P} tokens, N = {N} new tokens each, no EOS (all steps run)",
        f"- timing: 1 warm-up each, then {repeats} rounds timing every strategy once (interleaved); median "
        f"per strategy; tokens/s = B·N / time; "
        f"× greedy = time per generated token relative to greedy",
        "",
        "| strategy | parameters | time (ms) | tokens/s | ms / token | × greedy |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, strategy, seconds in rows:
        params = ", ".join(f"{k}={v}" for k, v in asdict(strategy).items() if k != "name")
        lines.append(f"| {name} | {params or '–'} | {seconds * 1e3:.1f} | {B * N / seconds:,.0f} | "
                     f"{seconds * 1e3 / (B * N):.4f} | {seconds / greedy:.2f} |")
    ratio = beam5 / greedy
    lines += ["", f"Beam search, width 5 (B·5 = {B * 5} rows per step, states re-ordered each step): "
                  f"**{ratio:.2f}× greedy** per generated token — goal ≤ 5×: "
                  f"{'met' if ratio <= 5 else 'NOT met'}.", ""]
    out = args.out or ROOT / "benchmarks" / "results" / f"decoding-{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"beam width 5 / greedy per token: {ratio:.2f}x  -> {out}")


if __name__ == "__main__":
    main()
