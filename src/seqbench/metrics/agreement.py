"""Subject-verb agreement of a language model on the synthetic grammar, by distance.

Every test sentence of the agreement corpus (:mod:`seqbench.data.synthetic`) has a subject, ``d``
intervening phrases (0..``max_attractors``, each with a noun of either number) and the main verb,
which must agree with the subject. For each sentence the LM scores the text up to and including
the verb and the following space, once with the correct verb and once with the same verb in the
other number (``sees`` / ``see``), from a fresh state after the stream separator::

    correct  <=>  log p(sep + prefix + verb_right + " ")  >  log p(sep + prefix + verb_wrong + " ")

The prefix is shared, so this compares the model's probability of the two verb forms at the verb
position, whatever the tokenizer (the trailing space ends the word: ``see`` is a prefix of
``sees``). Accuracy per distance: ``agreement_acc_d{d}`` (chance = 0.5), and over all sentences
``agreement_acc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqbench.data.synthetic import NOUNS, PREPS, VERBS

_NUMBER = {w: n for n, ws in NOUNS.items() for w in ws}
_VERB_NUMBER = {w: n for n, ws in VERBS.items() for w in ws}
_OTHER = {"sg": "pl", "pl": "sg"}


@dataclass
class AgreementItem:
    prefix: str      # the sentence up to the main verb, with its trailing space
    right: str       # the verb as written
    wrong: str       # the same verb in the other number
    distance: int    # intervening phrases between subject and verb


def parse(text: str) -> AgreementItem | None:
    """The agreement item of one sentence of the grammar, or None if it is not one."""
    words = text.strip().split()
    if len(words) < 4 or words[0] != "the" or words[1] not in _NUMBER:
        return None
    i, distance = 2, 0
    while i < len(words):
        w = words[i]
        if w in PREPS and i + 2 < len(words) and words[i + 1] == "the" and words[i + 2] in _NUMBER:
            i, distance = i + 3, distance + 1
        elif (w == "that" and i + 3 < len(words) and words[i + 1] == "the" and words[i + 2] in _NUMBER
              and words[i + 3] in _VERB_NUMBER):
            i, distance = i + 4, distance + 1
        else:
            break
    if i >= len(words) or _VERB_NUMBER.get(words[i]) != _NUMBER[words[1]]:
        return None
    number, verb = _NUMBER[words[1]], words[i]
    wrong = VERBS[_OTHER[number]][VERBS[number].index(verb)]
    return AgreementItem(" ".join(words[:i]) + " ", verb, wrong, distance)


def agreement_items(texts: list[str]) -> list[AgreementItem] | None:
    """Items of every text, or None unless *all* texts are sentences of the grammar."""
    items = [parse(t) for t in texts]
    return None if not items or any(it is None for it in items) else items


@torch.no_grad()
def sequence_logprobs(model, tokenizer, texts: list[str], batch_size: int = 64) -> list[float]:
    """log p(text) under the LM, summed over tokens 2..n given the ones before (token 1 is the
    context the stream starts from). ``model(tokens (B, T)) -> (logits (B, T, V), state)``."""
    device = model.device if hasattr(model, "device") else next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer.encode(t) for t in texts[start:start + batch_size]]
        T = max(map(len, ids))
        x = torch.zeros(len(ids), T, dtype=torch.long)
        mask = torch.zeros(len(ids), T - 1)
        for row, seq in enumerate(ids):
            x[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq) - 1] = 1
        x, mask = x.to(device), mask.to(device)
        logits, _ = model(x[:, :-1])                   # right padding never reaches earlier steps
        logp = -F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        out += (logp * mask).sum(1).tolist()
    return out


def agreement_accuracy(model, tokenizer, texts: list[str], separator: str = "\n") -> dict[str, float]:
    """``{"agreement_acc": a, "agreement_acc_d0": a0, ...}`` on the sentences ``texts``; {} when
    they are not (all) sentences of the agreement grammar."""
    items = agreement_items(texts)
    if items is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        right = sequence_logprobs(model, tokenizer, [separator + it.prefix + it.right + " " for it in items])
        wrong = sequence_logprobs(model, tokenizer, [separator + it.prefix + it.wrong + " " for it in items])
    finally:
        model.train(was_training)
    correct: dict[int, list[bool]] = {}
    for it, r, w in zip(items, right, wrong):
        correct.setdefault(it.distance, []).append(r > w)
    metrics = {f"agreement_acc_d{d}": sum(c) / len(c) for d, c in sorted(correct.items())}
    metrics["agreement_acc"] = sum(sum(c) for c in correct.values()) / len(items)
    return metrics
