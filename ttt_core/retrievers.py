"""The retrievers a run can use (`StudyConfig.retriever`), each a `search.Retriever` (the one interface of every
index kind): `search_texts(texts, k) -> (distances [n, k], corpus rows [n, k])`, nearest first, ties by corpus
row (so the first k of a larger k are these k), and `rows` (the indexed corpus rows), `__len__` and `meta`.

- 'dense' (the paper's): `DenseRetriever`, an embedder and its faiss index (`index.build_index`); distances
  are squared L2 between embeddings.
- 'bm25': `BM25Index`, Okapi BM25 (bm25s, Lucene variant) over the same indexed rows as the dense index; the
  query is the document's text. Distance = minus the BM25 score (smaller is nearer, as for the dense index).
- 'rerank': `RerankIndex`, two stages as In-Context RALM (Ram et al. 2023): the union of the top
  `rerank_candidates` of each first stage in `rerank_from`, re-ranked by exact `embedder` embeddings computed
  for the candidates only and cached on disk per (embedder weights, corpus, row). Distances are squared L2.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .corpus import peak_rss_mb
from .files import atomic_file, atomic_folder, content_key
from .search import distance_row_order, recall_at_k

# Tokenisation of BM25, for documents and queries alike: lower-cased runs of 2+ word characters (any script; the
# regex is scikit-learn's and bm25s's default), no stop words and no stemmer (the corpus mixes languages and code);
# a run of an unspaced script (Han, kana, Hangul, Thai) is cut into overlapping character bigrams, as Lucene's
# CJKAnalyzer does: whole, a Chinese sentence is one term that no other text shares.
BM25_SETTINGS = {"token_pattern": r"(?u)\b\w\w+\b", "lower": True, "stopwords": None, "stemmer": None,
                 "method": "lucene", "k1": 1.5, "b": 0.75, "query_terms": "distinct", "unspaced": "bigrams"}
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")


def bm25_tokens(text: str) -> list[str]:
    """The BM25 terms of a text (`BM25_SETTINGS`)."""
    terms = []
    for term in re.findall(BM25_SETTINGS["token_pattern"], text.lower()):
        pieces = _UNSPACED.split(term)
        runs = _UNSPACED.findall(term)
        terms += [p for p in pieces if len(p) >= 2]
        terms += [run[i:i + 2] for run in runs for i in range(max(1, len(run) - 1))]
    return terms


def _ordered(distances: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k places of [queries, n] candidates in (distance, corpus row) order (`search.distance_row_order`)."""
    order = distance_row_order(distances, rows, k)
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(rows, order, axis=1)


@dataclass
class DenseRetriever:
    """An embedder and its faiss index (`index.NeighborIndex` or a sharded index) as a retriever."""
    index: object
    embedder: object
    max_tokens: int | None = None

    @property
    def rows(self) -> np.ndarray:
        return self.index.rows

    @property
    def meta(self) -> dict:
        return self.index.meta

    def __len__(self) -> int:
        return len(self.index)

    def search_texts(self, texts: list[str], k: int, embedder=None,
                     max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The index's `search_texts` through this retriever's own embedder and tokens (the arguments are
        ignored): (squared L2 distances, corpus rows) [len(texts), min(k, len)], tie-stable."""
        return self.index.search_texts(texts, k, self.embedder, self.max_tokens)


class BM25Index:
    """BM25 over the corpus rows `rows`, built once and cached in `folder` (bm25s's files, `rows.npy`,
    `meta.json`). Scores every indexed row per query, so ties are broken by corpus row at any k."""

    def __init__(self, retriever, rows: np.ndarray, meta: dict):
        self.retriever, self.rows, self.meta = retriever, np.asarray(rows, dtype=np.int64), meta

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(cls, texts: list[str], rows: np.ndarray, meta: dict) -> "BM25Index":
        """Index `texts` (one chunk each, aligned with `rows`, the corpus rows) with bm25s at `BM25_SETTINGS` (Lucene's
        k1, b); `meta` is stored beside it. An empty text keeps its place."""
        import bm25s

        start = time.perf_counter()
        retriever = bm25s.BM25(k1=BM25_SETTINGS["k1"], b=BM25_SETTINGS["b"], method=BM25_SETTINGS["method"])
        # An empty chunk still takes its place (bm25s's empty token), so positions stay aligned with `rows`.
        retriever.index([bm25_tokens(t) for t in texts], show_progress=False)
        seconds = time.perf_counter() - start
        return cls(retriever, rows, dict(meta, retriever="bm25", bm25=BM25_SETTINGS, size=len(rows),
                                         index_seconds=round(seconds, 2), peak_rss_mb=peak_rss_mb(),
                                         chunks_per_second=round(len(rows) / max(seconds, 1e-9), 1)))

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of every indexed row for the query `text` (float32 [len]); its distinct terms count once."""
        vocab = self.retriever.vocab_dict
        ids = sorted({vocab[t] for t in bm25_tokens(text) if t in vocab})
        if not ids:
            return np.zeros(len(self.rows), dtype=np.float32)
        return np.asarray(self.retriever.get_scores(ids), dtype=np.float32)[:len(self.rows)]

    def search_texts(self, texts: list[str], k: int, embedder=None,
                     max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(minus BM25 scores, corpus rows) [len(texts), min(k, len)], highest score first, ties by corpus row. A
        chunk that shares no term with the query (score 0) is no match: row -1, distance inf, as a place an
        approximate index could not fill (taken in row order, they would be the first rows of one domain).
        `embedder` and `max_tokens` are ignored (BM25 reads the whole text)."""
        k = min(k, len(self))
        distances = np.stack([-self.scores(t) for t in texts]) if len(texts) else np.zeros((0, len(self)))
        rows = np.broadcast_to(self.rows, distances.shape)
        distances, rows = _ordered(distances, rows, k)
        unmatched = distances >= 0
        return np.where(unmatched, np.inf, distances), np.where(unmatched, -1, rows)

    def save(self, folder: Path) -> None:
        """Write the BM25 index, its rows and meta to `folder` in one atomic step."""
        with atomic_folder(folder) as tmp:
            self.retriever.save(str(tmp))
            np.save(tmp / "rows.npy", self.rows)
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "BM25Index":
        """The BM25 index `save` wrote to `folder`; FileNotFoundError when it holds none."""
        import bm25s

        return cls(bm25s.BM25.load(str(folder)), np.load(folder / "rows.npy"),
                   json.loads((folder / "meta.json").read_text()))


def rows_key(rows: np.ndarray) -> str:
    """16 hex characters of the sha256 of `rows` as little-endian int64: names what an index holds."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()[:16]


def build_bm25(config, corpus, progress: bool = True) -> BM25Index:
    """The BM25 index of the run's indexed rows (`index.indexed_mask`: the nested `index_fraction` subset less
    decontaminated chunks), cached under the corpus per (corpus fingerprint, rows, BM25_SETTINGS)."""
    from .index import indexed_mask

    train_rows = corpus.rows("train")
    if len(train_rows) == 0:
        raise ValueError(f"corpus={config.corpus!r} has no train documents to index")
    rows = train_rows[indexed_mask(config, corpus)]
    settings = content_key(BM25_SETTINGS, 8)
    folder = corpus.path / "index" / f"bm25-{settings}-{rows_key(rows)}"
    if (folder / "meta.json").exists():
        index = BM25Index.load(folder)
        if index.meta.get("corpus_fingerprint") == corpus.fingerprint and np.array_equal(index.rows, rows):
            return index
    index = BM25Index.build(corpus.texts(rows), rows, {"corpus_fingerprint": corpus.fingerprint,
                                                      "index_fraction": config.index_fraction})
    index.save(folder)
    return index


class EmbeddingCache:
    """Embeddings of corpus rows by one embedder, kept on disk in `folder` (one file, `cache.npz`: the rows and
    their vectors, replaced whole, so a kill while saving leaves the previous file) and filled on demand: a row is
    embedded once, whichever run or k asks for it. `embedded` counts rows embedded here."""

    FILE = "cache.npz"

    def __init__(self, folder: Path, embedder, max_tokens: int, corpus):
        self.folder, self.embedder, self.max_tokens, self.corpus = Path(folder), embedder, max_tokens, corpus
        self.embedded = 0
        if (self.folder / self.FILE).exists():
            with np.load(self.folder / self.FILE) as kept:
                rows, vectors = kept["rows"], kept["vectors"]
        else:
            rows, vectors = np.zeros(0, dtype=np.int64), np.zeros((0, embedder.dim), dtype=np.float32)
        self.position = {int(r): i for i, r in enumerate(rows)}
        self.vectors = vectors

    def adopt(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Take (in memory) the vectors of rows not cached yet, embedded by the same embedder elsewhere (a dense
        index's embeddings.npy): they are saved with the next rows this cache embeds."""
        new = [i for i, r in enumerate(rows) if int(r) not in self.position]
        if new:
            start = len(self.vectors)
            self.vectors = np.concatenate([self.vectors, np.asarray(vectors[new], dtype=np.float32)])
            self.position.update({int(rows[i]): start + j for j, i in enumerate(new)})

    def get(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] of the corpus rows, embedding (and saving) only those not cached yet."""
        missing = sorted({int(r) for r in rows} - set(self.position))
        if missing:
            new = self.embedder.encode(self.corpus.texts(np.asarray(missing)), self.max_tokens)
            start = len(self.vectors)
            self.vectors = np.concatenate([self.vectors, new.astype(np.float32)])
            self.position.update({r: start + i for i, r in enumerate(missing)})
            self.embedded += len(missing)
            order = np.asarray(sorted(self.position, key=self.position.get), dtype=np.int64)
            with atomic_file(self.folder / self.FILE) as tmp, open(tmp, "wb") as f:
                np.savez(f, rows=order, vectors=self.vectors)
        return self.vectors[[self.position[int(r)] for r in rows]]


@dataclass
class RerankIndex:
    """First stages (retrievers), each giving its top `candidates` rows; their union re-ranked by exact squared
    L2 between the `embedder`'s embeddings of query and candidates (`cache`)."""
    stages: dict  # name -> retriever (search_texts)
    candidates: int
    embedder: object
    max_tokens: int
    cache: EmbeddingCache
    meta: dict = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        return next(iter(self.stages.values())).rows

    def __len__(self) -> int:
        return len(self.rows)

    def search_texts(self, texts: list[str], k: int, embedder=None,
                     max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances, corpus rows) [len(texts), k] over the union of the first stages' candidates.
        Raises ValueError when k exceeds `rerank_candidates` (the union could be smaller than k). `embedder` and
        `max_tokens` are ignored: the re-ranker embeds with its own."""
        if k > self.candidates:
            raise ValueError(f"k={k} neighbours asked of the re-ranker, but rerank_candidates={self.candidates}: "
                             f"use rerank_candidates >= k")
        found = [stage.search_texts(texts, self.candidates)[1] for stage in self.stages.values()]
        queries = self.embedder.encode(list(texts), self.max_tokens)
        out_d, out_r = [], []
        for i, query in enumerate(queries):
            union = np.array(sorted({int(r) for f in found for r in f[i] if r >= 0}), dtype=np.int64)
            vectors = self.cache.get(union)
            distances = ((vectors - query) ** 2).sum(1).astype(np.float32)
            d, r = _ordered(distances[None], union[None], min(k, len(union)))
            out_d.append(d[0])
            out_r.append(r[0])
        width = min(k, len(self))
        pad = lambda a, fill: np.concatenate([a, np.full(width - len(a), fill, dtype=a.dtype)])  # noqa: E731
        return (np.stack([pad(d, np.inf) for d in out_d]) if out_d else np.zeros((0, width), np.float32),
                np.stack([pad(r, -1) for r in out_r]) if out_r else np.zeros((0, width), np.int64))


def search_texts(index, texts: list[str], k: int, embedder=None, max_tokens: int | None = None):
    """`index.search_texts(texts, k, embedder, max_tokens)` of any `search.Retriever`, as a function (the
    index-size chapter and benchmarks/full_recall.py call it so)."""
    return index.search_texts(texts, k, embedder, max_tokens)


def first_stage_names(rerank_from: str) -> list[str]:
    """The re-ranker's first stages: `rerank_from` split at '+' ('bm25' or a dense embedder's name)."""
    return [s for s in rerank_from.split("+")]


def build_retriever(config, corpus, embedder, progress: bool = True):
    """The retriever of `config.retriever` over the run's indexed rows, built where missing: 'dense' the faiss
    index of `embedder` (`index.build_index`), 'bm25' `build_bm25` (no corpus embedding), 'rerank' its first
    stages and an `EmbeddingCache` of `embedder`. The dense one is the `NeighborIndex` itself (its `search_texts`
    is given the embedder by the caller), so every dense use (SIFT, distance profiles, Ray) works as before."""
    import dataclasses

    from .index import build_index, index_folder
    from .models import load_embedder, weights_identity

    if config.retriever == "dense":
        return build_index(config, corpus, embedder, progress)
    if config.retriever == "bm25":
        return build_bm25(config, corpus, progress)
    stages = {}
    for name in first_stage_names(config.rerank_from):
        if name == "bm25":
            stages[name] = build_bm25(config, corpus, progress)
            continue
        stage_config = dataclasses.replace(config, retriever="dense", embedder=name, embed_max_tokens=None,
                                           embedder_tokenizer=None)
        same = name == config.embedder and not config.embedder_tokenizer  # the stage embeds with its own tokenizer
        stage_embedder = embedder if same else load_embedder(
            name, config.work_path, config.device, config.seed)
        stages[name] = DenseRetriever(build_index(stage_config, corpus, stage_embedder, progress), stage_embedder,
                                      None)
    max_tokens = embedder.max_tokens(config.embed_max_tokens)
    identity = content_key({"embedder": weights_identity(config.embedder, "embedder", config.work_path),
                            "tokenizer": config.embedder_tokenizer, "max_tokens": max_tokens,
                            "corpus": corpus.fingerprint})
    folder = corpus.path / "index" / f"rerank-vectors-{identity}"
    meta = {"retriever": "rerank", "corpus_fingerprint": corpus.fingerprint, "embedder": config.embedder,
            "embed_max_tokens": max_tokens, "rerank_candidates": config.rerank_candidates,
            # a dense stage by its weights too: a table distilled again under the same name is another stage
            "first_stages": {name: dict(stage_identity(stage), **({} if name == "bm25" else {
                "weights": weights_identity(name, "embedder", config.work_path)})) for name, stage in stages.items()}}
    cache = EmbeddingCache(folder, embedder, max_tokens, corpus)
    # The exact indexes of the same embedder (whole train split or nested subsets: index_folder's siblings, same
    # tokenizer and tokens) already hold vectors of many candidates: a chapter that builds both embeds them once.
    dense = index_folder(dataclasses.replace(config, retriever="dense", embed_max_tokens=max_tokens), corpus)
    for saved in [dense, *sorted(p for p in dense.parent.glob(f"{dense.name}-fraction*") if p.suffix != ".tmp")]:
        if (saved / "meta.json").exists() and (saved / "embeddings.npy").exists():  # finished builds only
            cache.adopt(np.load(saved / "rows.npy"), np.load(saved / "embeddings.npy", mmap_mode="r"))
    return RerankIndex(stages, config.rerank_candidates, embedder, max_tokens, cache, meta)


def stage_identity(retriever) -> dict:
    """What a retriever holds and how it ranks, for run keys (`index.indexed_identity` of its rows and meta)."""
    from .index import indexed_identity

    return indexed_identity(getattr(retriever, "index", retriever))


def retrieval_agreement(found_rows: np.ndarray, exact_rows: np.ndarray, query_domains, row_domains: dict) -> dict:
    """How a retriever's neighbours compare with exact ones, for the chapter: `recall@k` (mean share of each
    query's exact top-k that `found_rows` holds; arrays [queries, k] of corpus rows, -1 never counts, as
    `search.recall_at_k`) and `same_domain` (share of found neighbours from the query's own domain;
    `row_domains` maps corpus row -> domain), with `exact_same_domain` for the exact neighbours."""
    def share(rows):
        hits = [row_domains[int(r)] == d for q, d in zip(rows, query_domains) for r in q if r >= 0]
        return float(np.mean(hits)) if hits else float("nan")

    return {"recall@k": recall_at_k(np.asarray(found_rows), np.asarray(exact_rows)), "k": int(np.shape(exact_rows)[1]),
            "same_domain": share(found_rows), "exact_same_domain": share(exact_rows), "queries": len(exact_rows)}


def memory_bytes(index) -> int:
    """Bytes of what a retriever searches in memory: a dense index's vectors (faiss holds n x d float32), BM25's
    sparse score matrix (bm25s's CSC arrays), a re-ranker's first stages (the candidates' vectors are its cache's,
    on disk, however many earlier runs filled it)."""
    if isinstance(index, RerankIndex):
        return sum(memory_bytes(stage) for stage in index.stages.values())
    if isinstance(index, BM25Index):
        return int(sum(np.asarray(a).nbytes for a in index.retriever.scores.values() if hasattr(a, "nbytes")))
    inner = getattr(index, "index", index)  # DenseRetriever -> NeighborIndex -> faiss
    inner = getattr(inner, "index", inner)
    return int(inner.ntotal) * int(inner.d) * 4

