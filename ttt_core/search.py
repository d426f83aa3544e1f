"""The retrieval interface: `Retriever`, what every index kind is to its callers; the one order of neighbours
and the tie-stable search that keeps it; the recall of an approximate search and the recipe of an approximate
faiss index. It imports no other module of ttt_core: the index modules (`index`, `shards`, `retrievers`,
`scale`) build on it and never need to import each other back.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Retriever(Protocol):
    """The one search step of a run: the indexed train chunks, and their nearest ones for texts.

    Which kind implements which part:
    - the dense kinds `index.NeighborIndex` (exact or approximate faiss), `shards.ShardedIndex` and
      `scale.RayShardedIndex` get `search_texts` from `DenseSearch`: the texts are embedded by `embedder` (the
      one that made the indexed vectors, up to `max_tokens` tokens) and go to their vector part, `search(vectors
      float32 [n, dim], k)`, which returns the same (distances, rows) for vectors already embedded;
      `NeighborIndex.search_ids` alone gives faiss ids instead of rows (SIFT reconstructs the vectors by id);
    - `retrievers.DenseRetriever` (a dense kind with its embedder), `retrievers.BM25Index` and
      `retrievers.RerankIndex` hold what they search with and ignore `embedder` and `max_tokens`.
    (`isinstance(x, Retriever)` checks the names only, and under Python 3.11 reads `rows`: a sharded index then
    loads every shard's rows file.)
    """
    rows: np.ndarray  # int64 [len]: the corpus row of each indexed train chunk, in index order
    meta: dict  # how the index was built (its identity part goes into run keys: `index.indexed_identity`)

    def __len__(self) -> int:
        """Indexed train chunks."""

    def search_texts(self, texts: list[str], k: int, embedder=None,
                     max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows), both [len(texts), min(k, len(self))], nearest first, ties broken by the lower corpus
        row, so the first k of a larger k are these k. rows: int64 corpus rows of train chunks; -1 where fewer
        than k were found (an approximate index's miss, a text with no vector, no BM25 term in common), last,
        at distance inf. distances: float32 (float64 from a sharded merge); squared L2 between embeddings (for
        unit vectors 2 - 2 cos) for the dense kinds and the re-ranker, minus the BM25 score for BM25. Raises
        ValueError for a dense kind without `embedder` and for a re-ranker asked for more than its candidates."""


class DenseSearch:
    """`Retriever.search_texts` for a dense kind, which has `search(vectors, k)` (see `Retriever`)."""

    def search_texts(self, texts: list[str], k: int, embedder=None,
                     max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The texts embedded by `embedder`, then `self.search`. A text embedded as the zero vector (a static
        table's text with no token of its vocabulary, an emoji say) has no direction: every chunk would tie and
        come in corpus-row order, so it gets no neighbour (row -1, distance inf), as BM25 gives a query that
        shares no term."""
        if embedder is None:
            raise ValueError(f"a dense index ({type(self).__name__}) is searched by text through the embedder "
                             "that made its vectors: pass embedder")
        vectors = embedder.encode(list(texts), max_tokens)
        distances, rows = self.search(vectors, k)
        empty = ~np.asarray(vectors).any(axis=1)
        if empty.any():
            distances, rows = distances.copy(), rows.copy()
            distances[empty], rows[empty] = np.inf, -1
        return distances, rows


def distance_row_order(distances: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first k places per query (arrays of shape [queries, n]) in (distance, corpus row) order:
    the one total order of neighbours, so that a tie never depends on the search's k, on faiss ids or on how the
    corpus was sharded. Distances are compared exactly as given (no tolerance: a band would either chain
    distinct distances into one "tie" or, as bins, still split near-equal ones at its edges). Missing places
    (row -1, as an approximate index may leave) sort last."""
    d = np.where(rows < 0, np.inf, distances)
    return np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), d), axis=-1)[:, :k]


def tie_stable_search(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], queries: np.ndarray,
                      k: int, total: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest per query in (distance, corpus row) order, so that the first k of any larger k are these k.

    `search(queries, n)` is a faiss-style search returning (distances, ids) of shape [queries, n], nearest first,
    id -1 where nothing was found; `rows[id]` is the corpus row that breaks ties (default: the id itself). faiss
    returns an arbitrary member of a tie that straddles the k-th place, and a different one for another k, so the
    search asks for more than k and doubles until, for every query, the last place is strictly farther than the
    k-th (the whole tie is in hand), the search ran out of candidates (id -1) or the index is exhausted; the
    answer is then sorted by (distance, row) and cut at k. Exact indexes and IVF (a fixed set of probed cells)
    are prefix-stable for every k; HNSW explores max(efSearch, n) candidates, so it is while k plus the extra
    places stays within efSearch. Returns (distances [queries, k], ids [queries, k]), missing places last."""
    k = min(k, total)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if k <= 0:
        return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
    n = min(total, k + max(8, k))
    while True:
        distances, ids = search(queries, n)
        ids = np.asarray(ids, dtype=np.int64)
        distances = np.where(ids < 0, np.inf, distances)
        kth = distances[:, min(k, distances.shape[1]) - 1]
        settled = (distances[:, -1] > kth) | (ids[:, -1] < 0) | (distances.shape[1] < n)
        if n >= total or settled.all():
            break
        n = min(total, 2 * n)
    keys = ids if rows is None else np.where(ids < 0, -1, np.asarray(rows)[np.maximum(ids, 0)])
    order = distance_row_order(distances, keys, k)
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the approximate search found (places of -1 never count)."""
    k = exact.shape[1]
    return float(np.mean([len((set(f) & set(e)) - {-1}) / k for f, e in zip(found, exact)])) if len(exact) else 1.0


def approximate_structure(x: np.ndarray, metric: str, index_type: str, nprobe: int, ef_search: int, seed: int = 0):
    """An approximate faiss index of the vectors `x` ('ivf': IVF-Flat with about 4 sqrt(n) cells, `nprobe` of them
    probed; 'hnsw': HNSW32, `ef_search`) and its settings; the one recipe for one index and for each shard."""
    import faiss

    n, dim = x.shape
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if index_type == "ivf":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 training points per cell
        structure = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim),
                                       dim, nlist, faiss_metric)
        sample = np.random.default_rng(seed).permutation(n)[:min(n, 256 * nlist)]
        structure.train(x[sample])
        structure.add(x)
        structure.nprobe = min(nprobe, nlist)
        return structure, {"nlist": nlist, "nprobe": structure.nprobe}
    if index_type == "hnsw":
        structure = faiss.IndexHNSWFlat(dim, 32, faiss_metric)
        structure.hnsw.efConstruction = 64
        structure.add(x)
        structure.hnsw.efSearch = ef_search
        return structure, {"M": 32, "efSearch": ef_search}
    raise ValueError(f"invalid index_type={index_type!r}: expected 'ivf' or 'hnsw' here")
