"""The Transformer row's attention: ``torch.nn.functional.scaled_dot_product_attention`` (what
``seqbench.cells.transformer`` calls) against the same attention written out by hand
(softmax(q kᵀ / √d + mask) v), in the whole stack's forward + backward.

    python benchmarks/bench_attention.py            # -> benchmarks/results/attention-cpu.md
    python benchmarks/bench_attention.py --quick    # one small shape, nothing saved

Protocol: the two shapes of ``bench_cells.py`` (small: B64 T100 I128 -> 256, 1 layer; large: B20
T35 I650 -> 650, 2 layers), ``build_stack("transformer", ...)`` in training mode without dropout,
one timed step = zero the grads, forward, ``out.sum().backward()``; 2 warm-up steps, then
``--repeats`` rounds alternating the two attentions, median step time. Before timing, the two
attentions' outputs and input gradients are checked equal (float32, 1e-5 relative).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F
from _common import machine_info, markdown_table, report_head, save_report

from seqbench.cells import build_stack

SIZES = {"small": dict(B=64, T=100, I=128, H=256, L=1), "large": dict(B=20, T=35, I=650, H=650, L=2)}
SDPA = F.scaled_dot_product_attention


def written_out(q, k, v, attn_mask=None, dropout_p=0.0, **_):
    """Attention by hand: softmax(q kᵀ / √d), keys a query may not see at -inf, times v."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return F.dropout(scores.softmax(-1), dropout_p) @ v


def step_of(size: dict, attention):
    torch.manual_seed(0)
    stack = build_stack("transformer", size["I"], size["H"], num_layers=size["L"])
    x = torch.randn(size["B"], size["T"], size["I"], requires_grad=True)

    def step():
        with mock.patch.object(F, "scaled_dot_product_attention", attention):
            for p in stack.parameters():
                p.grad = None
            x.grad = None
            out, _ = stack(x)
            out.sum().backward()
        return out.detach(), x.grad.detach()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    sizes = {"small": SIZES["small"]} if args.quick else SIZES
    repeats = 2 if args.quick else args.repeats
    rows = []
    for name, size in sizes.items():
        steps = {"sdpa": step_of(size, SDPA), "written out": step_of(size, written_out)}
        (out_a, grad_a), (out_b, grad_b) = steps["sdpa"](), steps["written out"]()
        assert torch.allclose(out_a, out_b, rtol=1e-5, atol=1e-5) and torch.allclose(grad_a, grad_b, rtol=1e-5, atol=1e-5)
        for step in steps.values():
            step(), step()
        times = {k: [] for k in steps}
        for r in range(repeats):
            for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                t = time.perf_counter()
                steps[k]()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        rows.append([f"{name}: B{size['B']} T{size['T']} I{size['I']} H{size['H']}, {size['L']} layer(s)",
                     f"{med['written out']:.1f}", f"{med['sdpa']:.1f}", f"{med['written out'] / med['sdpa']:.2f}×"])
    text = "\n".join([*report_head("Transformer attention: SDPA against written out",
                                   "python benchmarks/bench_attention.py" + (" --quick" if args.quick else ""),
                                   started, machine_info("cpu")),
                      "Protocol: the docstring of `benchmarks/bench_attention.py`; outputs and input gradients "
                      "checked equal first.", "",
                      markdown_table(["shape", "written out ms/step", "SDPA ms/step", "speed-up"], rows), ""])
    save_report(text, "attention-cpu.md", not args.quick)


if __name__ == "__main__":
    main()
