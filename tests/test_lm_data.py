"""Tokenizer stream encoding and truncated-BPTT window layout, against brute force."""

from __future__ import annotations

import math

import pytest
import torch

from seqbench.data.lm import StreamWindows
from seqbench.errors import DataError
from seqbench.tokenizers import CharTokenizer, SPECIALS, train_or_load


def test_char_tokenizer_round_trip_and_unknowns():
    tok = CharTokenizer().train(["hello world\n", "abc"])
    assert tok.vocab_size == len(SPECIALS) + len(set("hello world\nabc"))
    assert [tok.hf.id_to_token(i) for i in range(4)] == SPECIALS
    text = "hello\nworld abc"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("z") == [tok.unk_id]  # 'z' never seen in training


def test_stream_counts_characters_and_bytes_exactly():
    tok = CharTokenizer().train(["naïve café ☕ text"])
    text = "café ☕ naïve"
    s = tok.encode_stream(text)
    assert s["ids"].tolist() == tok.encode(text)
    assert s["chars"].tolist() == [1] * len(text)
    assert s["bytes"].tolist() == [len(c.encode()) for c in text]
    assert int(s["bytes"].sum()) == len(text.encode())


def test_tokenizer_cache_returns_same_vocabulary(tmp_path):
    texts = ["abc\n", "abd\n"]
    first = train_or_load(CharTokenizer(), texts, tmp_path)
    files = list(tmp_path.rglob("tokenizer.json"))
    assert len(files) == 1
    second = train_or_load(CharTokenizer(), texts, tmp_path)
    assert second.hf.get_vocab() == first.hf.get_vocab()
    train_or_load(CharTokenizer(), ["xyz\n"], tmp_path)  # other corpus -> other entry
    assert len(list(tmp_path.rglob("tokenizer.json"))) == 2


def stream(n):
    ids = torch.arange(n)
    return {"ids": ids, "chars": torch.ones(n, dtype=torch.long), "bytes": 2 * torch.ones(n, dtype=torch.long)}


@pytest.mark.parametrize("n,batch,bptt", [(101, 4, 7), (50, 3, 5), (1000, 8, 64)])
def test_windows_tile_columns_with_shifted_targets(n, batch, bptt):
    w = StreamWindows(stream(n), batch, bptt)
    seg = (n - 1) // batch
    assert len(w) == math.ceil(seg / bptt)
    x = torch.cat([w[i]["x"] for i in range(len(w))], dim=1)
    y = torch.cat([w[i]["y"] for i in range(len(w))], dim=1)
    assert x.shape == (batch, seg)
    for b in range(batch):  # column b is the contiguous slice b*seg .. (b+1)*seg of the stream
        assert x[b].tolist() == list(range(b * seg, (b + 1) * seg))
    assert torch.equal(y, x + 1)
    assert torch.equal(w[0]["bytes"], 2 * torch.ones_like(w[0]["x"]))


def test_ranks_read_disjoint_columns():
    n, batch, world = 401, 4, 2
    parts = [StreamWindows(stream(n), batch, 10, rank=r, world_size=world) for r in range(world)]
    seen = [set(p.x.flatten().tolist()) for p in parts]
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == (n - 1) // (batch * world) * batch * world


def test_too_small_split_is_a_clear_error():
    with pytest.raises(DataError, match="validation split has 10 tokens: too few for 16 streams"):
        StreamWindows(stream(10), 16, 4, split="validation")
