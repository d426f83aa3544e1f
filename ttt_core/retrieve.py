"""Nearest-neighbour retrieval for a test document, as the paper: embed its first `embed_max_tokens`
embedder tokens, search the index, return the k nearest train documents, nearest first."""
from __future__ import annotations

from dataclasses import dataclass

from .corpus import Corpus
from .index import NeighborIndex
from .models import Embedder


@dataclass(frozen=True)
class Neighbor:
    row: int
    doc_id: str
    domain: str
    distance: float  # squared L2 between embeddings
    text: str


def retrieve(query: str, k: int, embedder: Embedder, index: NeighborIndex, corpus: Corpus,
             embed_max_tokens: int = 512) -> list[Neighbor]:
    if k < 0:
        raise ValueError(f"invalid k={k!r}: expected an integer >= 0")
    if k == 0:
        return []
    vector = embedder.encode([query], embed_max_tokens)
    distances, rows = index.search(vector, k)
    records = corpus.dataset.select([int(r) for r in rows[0]])
    return [Neighbor(int(r), rec["id"], rec["domain"], float(d), rec["text"])
            for r, d, rec in zip(rows[0], distances[0], records)]
