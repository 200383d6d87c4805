"""Two small adapters for the core's tests: a fixed-length vector and a padded sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmvq.adapter import AdapterConfig, AdapterInputError, BadInput, ModalityAdapter, Tokens


@dataclass
class VecConfig(AdapterConfig):
    size: int = 12
    tokens: int = 3


class VecAdapter(ModalityAdapter):
    """A float vector of ``size`` split into ``tokens`` chunks; MSE reconstruction."""

    config_class = VecConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.chunk = c.size // c.tokens
        self.enc = nn.Linear(self.chunk, c.code_dim)
        self.dec = nn.Linear(c.code_dim, self.chunk)

    def preprocess(self, example):
        x = torch.as_tensor(example, dtype=torch.float32)
        if x.shape != (self.config.size,):
            raise AdapterInputError(
                f"vec: expected shape ({self.config.size},), got {tuple(x.shape)}"
            )
        return {"x": x}

    def bad_inputs(self):
        return [BadInput("wrong length", [1.0], "expected shape")]

    def num_tokens(self):
        return self.config.tokens

    def encode(self, batch):
        x = batch["x"].view(batch["x"].shape[0], self.config.tokens, self.chunk)
        z = self.enc(x)
        return Tokens(z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device))

    def decode(self, h, batch=None):
        return self.dec(h).flatten(1)

    def reconstruction_loss(self, batch, recon):
        return (recon - batch["x"]).pow(2).mean(1)

    def postprocess(self, recon):
        return [r.tolist() for r in recon]

    def last_layer(self):
        return self.dec.weight


@dataclass
class SeqConfig(AdapterConfig):
    vocab: int = 11
    max_length: int = 5


class SeqAdapter(ModalityAdapter):
    """A list of ints (1..vocab-1) padded with 0 to ``max_length``; cross-entropy reconstruction."""

    config_class = SeqConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.emb = nn.Embedding(c.vocab, c.code_dim)
        self.pos = nn.Parameter(torch.randn(c.max_length, c.code_dim) * 0.1)
        self.head = nn.Linear(c.code_dim, c.vocab)

    def preprocess(self, example):
        if not isinstance(example, (list, tuple)) or not example:
            raise AdapterInputError(f"seq: expected a non-empty list of ints, got {example!r}")
        ids = torch.zeros(self.config.max_length, dtype=torch.long)
        ids[: len(example)] = torch.as_tensor(example[: self.config.max_length])
        return {"ids": ids, "mask": ids > 0}

    def num_tokens(self):
        return self.config.max_length

    def encode(self, batch):
        return Tokens(self.emb(batch["ids"]) + self.pos, batch["mask"].bool())

    def decode(self, h, batch=None):
        return self.head(h)

    def reconstruction_loss(self, batch, recon):
        ce = nn.functional.cross_entropy(recon.transpose(1, 2), batch["ids"], reduction="none")
        m = batch["mask"].float()
        return (ce * m).sum(1) / m.sum(1).clamp_min(1)

    def postprocess(self, recon):
        return recon.argmax(-1).tolist()


def toy_batch(vec: VecAdapter, seq: SeqAdapter, n: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vecs = [torch.randn(vec.config.size, generator=g) for _ in range(n)]
    seqs = [
        torch.randint(
            1,
            seq.config.vocab,
            (int(torch.randint(1, seq.config.max_length + 1, (1,), generator=g)),),
            generator=g,
        ).tolist()
        for _ in range(n)
    ]
    return {
        "vec": vec.collate([vec.preprocess(v) for v in vecs]),
        "seq": seq.collate([seq.preprocess(s) for s in seqs]),
    }
