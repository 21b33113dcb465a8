"""Quality of generated text: likelihood, diversity, repetition, copying, grammaticality.

N-grams are **word-level**: a text's words are its whitespace-separated pieces (``str.split``).
Word n-grams mean the same thing whatever the model's tokenizer (char, BPE, ...), so the numbers
compare across tokenizers, and character n-grams of a ~40-symbol alphabet say little about
diversity (almost every character bigram occurs). The scores are computed over the generated
continuations only (the prompt, shared by every sample, would count as repetition/overlap).

=================  =========================================================================
nll_per_char       sum of -log p(y_t | prompt, y_<t) over the generated tokens, under the model
                   at temperature 1, / characters of the generated text (nats; pooled)
distinct_n         |unique n-grams| / |n-grams|, pooled over all samples (Li et al. 2016)
repetition_n       per sample 1 - |unique n-grams| / |n-grams|, averaged over the samples
                   (seq-rep-n of Welleck et al. 2020): share of a sample's n-grams that repeat
self_bleu          mean over samples of sentence BLEU-4 (sacrebleu, 13a tokenizer, exp
                   smoothing) of one sample against all others (Zhu et al. 2018); 100 = identical
mean_words/chars   mean length of a continuation in words / characters
copy_n             share of generated n-grams (occurrences) that occur in the training text
grammatical_rate   synthetic agreement grammar only: share of complete generated sentences
                   (prompt included) that the grammar accepts (``data.synthetic.is_grammatical``)
=================  =========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

#: n of the repetition and copy metrics (word 4-grams)
REP_N = COPY_N = 4


def words(text: str) -> list[str]:
    return text.split()


def ngrams(seq: Sequence, n: int) -> list[tuple]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """|unique word n-grams| / |word n-grams| over all texts together (0 if there are none)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Iterable[str], n: int = REP_N) -> float:
    """Mean over texts (with at least one n-gram) of 1 - |unique n-grams| / |n-grams|."""
    rates = []
    for t in texts:
        grams = ngrams(words(t), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Mean sentence BLEU-4 of each text against all the others; NaN with fewer than 2 texts."""
    import sacrebleu

    texts = list(texts)
    if len(texts) < 2:
        return math.nan
    return sum(sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score
               for i, t in enumerate(texts)) / len(texts)


def ngram_set(text: str, n: int = COPY_N) -> set[tuple]:
    return set(ngrams(words(text), n))


def copy_rate(texts: Iterable[str], reference: str | set, n: int = COPY_N) -> float:
    """Share of the texts' word n-grams that occur in ``reference`` (a text or its n-gram set)."""
    seen = reference if isinstance(reference, set) else ngram_set(reference, n)
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return sum(g in seen for g in grams) / len(grams) if grams else 0.0


def mean_length(texts: Sequence[str], unit: str = "words") -> float:
    sizes = [len(words(t)) if unit == "words" else len(t) for t in texts]
    return sum(sizes) / len(sizes) if sizes else 0.0


@torch.no_grad()
def nll_per_char(model, prompt: torch.Tensor, new: torch.Tensor, chars: Sequence[int],
                 eos_id: int | None = None) -> float:
    """Σ -log p(new_t | prompt, new_<t) / Σ chars, under ``model`` (temperature 1).

    prompt (B, P), new (B, N) token ids; ``chars[i]`` = characters of sample i's generated text.
    With ``eos_id`` a row's tokens after its first EOS (padding) are not scored.
    """
    if new.shape[1] == 0:
        return 0.0
    P = prompt.shape[1]
    logits, _ = model(torch.cat([prompt, new], 1))
    logp = F.log_softmax(logits[:, P - 1:-1].float(), dim=-1).gather(-1, new[..., None]).squeeze(-1)
    mask = torch.ones_like(new, dtype=torch.bool)
    if eos_id is not None:
        is_eos = (new == eos_id).long()
        mask = (is_eos.cumsum(1) - is_eos) == 0   # up to and including the first EOS
    return float(-(logp * mask).sum()) / max(sum(chars), 1)


def text_metrics(continuations: Sequence[str], full_texts: Sequence[str] | None = None,
                 train_ngrams: set | None = None, grammar: bool = False) -> dict[str, float]:
    """Every text-only metric of the module docstring (keys without a prefix)."""
    m = {f"distinct_{n}": distinct_n(continuations, n) for n in (1, 2, 3)}
    m[f"repetition_{REP_N}"] = repetition_rate(continuations, REP_N)
    m["self_bleu"] = self_bleu(continuations)
    m["mean_words"] = mean_length(continuations, "words")
    m["mean_chars"] = mean_length(continuations, "chars")
    if train_ngrams is not None:
        m[f"copy_{COPY_N}"] = copy_rate(continuations, train_ngrams, COPY_N)
    if grammar:
        from seqbench.data.synthetic import grammatical_rate

        rate, count = grammatical_rate("\n".join(full_texts if full_texts is not None else continuations))
        m.update(grammatical_rate=rate, sentences=count)
    return m
