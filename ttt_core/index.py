"""A faiss index over the train split: exact flat search, as the paper (IndexFlatL2; inner product when the
embedder normalises, which ranks identically), saved with the metadata needed to refuse a mismatched use."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import StudyConfig
from .corpus import Corpus, peak_rss_mb
from .files import content_key
from .models import Embedder
from .search import DenseSearch, approximate_structure, recall_at_k, tie_stable_search


@dataclass
class NeighborIndex(DenseSearch):
    """One faiss index of the indexed train chunks: a `search.Retriever` (its text search embeds, then `search`)."""
    index: object  # faiss.Index
    rows: np.ndarray  # corpus row of each vector
    meta: dict

    @property
    def metric(self) -> str:
        """'ip' (inner product of L2-normalised vectors: cosine) or 'l2', as the index was built."""
        return self.meta["metric"]

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, rows: np.ndarray, meta: dict) -> "NeighborIndex":
        """An exact faiss index of `embeddings` ([n, dim], cast to float32) standing for corpus `rows` ([n],
        int64): inner product for meta['metric'] == 'ip' (unit vectors), else L2."""
        import faiss

        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        index = faiss.IndexFlatIP(embeddings.shape[1]) if meta["metric"] == "ip" else faiss.IndexFlatL2(
            embeddings.shape[1])
        index.add(embeddings)
        return cls(index, np.asarray(rows, dtype=np.int64), dict(meta, size=len(rows)))

    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances, faiss ids) of shape [queries, min(k, len)], in (distance, corpus row) order:
        ties are ordered by corpus row whatever k is, so the first k of a larger search are these k
        (`search.tie_stable_search`). Missing places (an approximate index may find fewer) are (inf, -1), last."""
        def raw(q: np.ndarray, n: int):
            scores, ids = self.index.search(q, n)
            return (2.0 - 2.0 * scores if self.metric == "ip" else scores), ids

        return tie_stable_search(raw, queries, k, len(self), self.rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances, corpus rows) of shape [queries, min(k, len)], nearest first, ties by corpus row
        (so a run's first k neighbours are the first k of a run with more). For unit vectors 2 - 2 * cosine is
        the squared L2 distance, so distances mean the same whichever faiss metric holds the vectors. An
        approximate index may find fewer than k: the missing places have distance inf and row -1."""
        distances, ids = self.search_ids(queries, k)
        return distances, np.where(ids < 0, -1, self.rows[np.maximum(ids, 0)])

    def save(self, folder: Path, embeddings: np.ndarray | None = None) -> None:
        """Write the faiss index, its rows and meta (and `embeddings`, (n, dim) float32, when given) to `folder` in one
        atomic step: a kill leaves the old folder or the new one, never half of either."""
        import faiss

        from .files import atomic_folder

        with atomic_folder(folder) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            np.save(tmp / "rows.npy", self.rows)
            if embeddings is not None:  # kept so that ablations can build sub-indexes without re-embedding
                np.save(tmp / "embeddings.npy", embeddings)
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, folder: Path, embedder: str | None = None, corpus_fingerprint: str | None = None,
             embed_max_tokens: int | None = None) -> "NeighborIndex":
        """Load an index; one built for another corpus or embedder is a clear error, not silent nonsense."""
        import faiss

        meta = json.loads((Path(folder) / "meta.json").read_text())
        for name, want in (("embedder", embedder), ("corpus_fingerprint", corpus_fingerprint),
                           ("embed_max_tokens", embed_max_tokens)):
            if want is not None and meta.get(name) != want:
                raise ValueError(f"the index at {folder} was built with {name}={meta.get(name)!r} but this run "
                                 f"uses {name}={want!r}; rebuild it (delete the folder) or use the matching {name}")
        return cls(faiss.read_index(str(Path(folder) / "index.faiss")), np.load(Path(folder) / "rows.npy"), meta)

    def subset(self, keep: np.ndarray, embeddings: np.ndarray, **meta) -> "NeighborIndex":
        """A smaller index over the vectors where `keep` is true (no re-embedding)."""
        return NeighborIndex.from_embeddings(embeddings[keep], self.rows[keep], dict(self.meta, **meta))

    def distance_profile(self, queries: np.ndarray, r_max: int) -> np.ndarray:
        """Mean squared-L2 distance from the queries to their r-th nearest neighbour, r = 1..r_max."""
        distances, _ = self.search(queries, r_max)
        return distances.mean(axis=0)


# What built an index's vectors and structure (its meta); timings and measured recall are left out (they vary).
INDEX_IDENTITY = ("corpus_fingerprint", "embedder", "embedder_tokenizer", "embed_max_tokens", "dim", "metric",
                  "index_type", "nlist", "nprobe", "M", "efSearch",
                  "retriever", "bm25", "rerank_candidates", "first_stages")  # the last: `retrievers` indexes


def indexed_identity(index) -> dict:
    """What an index holds, for run keys: a sha256 of its corpus rows (which chunks of the fingerprinted corpus
    it indexes, in order) and the meta that says how their vectors were made. A `NeighborIndex` hashes its rows
    in memory; a sharded index (`shards.ShardedIndex`, or `scale.RayShardedIndex` through its local copy) hashes
    each finished shard's rows file once (cached beside the shards: at the Pile's scale they are gigabytes)."""
    from .models import cached_sha256

    index = getattr(index, "local", index)  # a RayShardedIndex searches through actors; its files are local's
    h = hashlib.sha256()
    if hasattr(index, "shards") and hasattr(index, "folder"):
        for name in index.shards:
            h.update(f"{name}\0{cached_sha256(index.folder / f'{name}.rows.npy', index.folder / 'sha256.json')}\n"
                     .encode())
    else:
        h.update(np.ascontiguousarray(index.rows, dtype="<i8").tobytes())
    return {"rows_sha256": h.hexdigest(), "rows": len(index),
            **{name: index.meta[name] for name in INDEX_IDENTITY if name in index.meta}}


def approximate(index: NeighborIndex, config: StudyConfig, queries: np.ndarray) -> NeighborIndex:
    """The same vectors under an approximate faiss index (`config.index_type`), with its recall@k against the
    exact index on `queries` (held-out test chunks) in its meta, so every run that uses it says what it costs."""
    import time

    x = np.ascontiguousarray(index.index.reconstruct_n(0, len(index)), dtype=np.float32)  # the exact index's vectors
    start = time.perf_counter()
    structure, settings = approximate_structure(x, index.metric, config.index_type, config.index_nprobe,
                                                config.index_ef_search, config.seed)
    built = NeighborIndex(structure, index.rows, dict(index.meta, index_type=config.index_type, **settings,
                                                      build_seconds=round(time.perf_counter() - start, 2)))
    k = max(1, min(config.k or 1, len(index)))
    built.meta[f"recall@{k}"] = recall_at_k(built.search(queries, k)[1], index.search(queries, k)[1])
    built.meta["recall_queries"] = int(len(queries))
    return built


def nested_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a random `fraction` of n items; masks of growing fractions are nested (one shuffle)."""
    order = np.random.default_rng(seed).permutation(n)
    keep = np.zeros(n, dtype=bool)
    keep[order[:max(1, int(round(fraction * n)))]] = True
    return keep


def exact_duplicates(index: NeighborIndex, queries: np.ndarray, threshold: float = 1e-4) -> int:
    """Queries whose nearest indexed document is (numerically) the same embedding."""
    distances, _ = index.search(queries, 1)
    return int((distances[:, 0] < threshold).sum())


def embed_tokens(config: StudyConfig) -> int:
    """The tokens per text the run's embedder embeds: `embed_max_tokens`, or with None the embedder's declared
    limit (`models.declared_embed_limit`). Every index cache is named and checked by this effective number, so
    that None and the same number written out share a cache and another limit never does."""
    if config.embed_max_tokens is not None:
        return config.embed_max_tokens
    from .models import declared_embed_limit

    return declared_embed_limit(config.embedder, config.work_path)


def index_folder(config: StudyConfig, corpus: Corpus) -> Path:
    """Where the index of `config`'s embedder over `corpus` is cached: named by the embedder, its tokenizer, the
    tokens embedded and, for a local folder or a Hub id, the identity of its weights (`models.weights_identity`):
    new weights saved under the same name are other vectors, never the cached ones. Packaged and tiny embedders
    are pinned by their name (a package version, or code), so their folder names stay as they were."""
    import hashlib

    from .models import PACKAGED, TINY_EMBEDDERS, weights_identity
    from .static import STATIC_EMBEDDERS

    safe = config.embedder.replace("/", "--")
    if config.embedder_tokenizer:  # another tokenizer gives other vectors
        safe += "--tokenizer-" + hashlib.sha256(config.embedder_tokenizer.encode()).hexdigest()[:8]
    # A static table is distilled here, not pinned by a package: named by its files' hashes too.
    if (config.embedder not in PACKAGED and config.embedder not in TINY_EMBEDDERS) or config.embedder in STATIC_EMBEDDERS:
        safe += "--weights-" + content_key(weights_identity(config.embedder, "embedder", config.work_path), 8)
    return corpus.path / "index" / f"{safe}-{embed_tokens(config)}"


def load_embeddings(config: StudyConfig, corpus: Corpus) -> np.ndarray:
    """Embeddings of the full train split, in the order of the full index's rows."""
    return np.load(index_folder(config, corpus) / "embeddings.npy")


def indexed_mask(config: StudyConfig, corpus: Corpus) -> np.ndarray:
    """Which train chunks (in `corpus.rows('train')` order) the run's index holds: the nested random share
    `index_fraction`, less the chunks that decontamination leaves out."""
    from .decontaminate import clean_train_mask

    return nested_subset(len(corpus.rows("train")), config.index_fraction, config.seed) & clean_train_mask(
        config, corpus)


def build_index(config: StudyConfig, corpus: Corpus, embedder: Embedder, progress: bool = True) -> NeighborIndex:
    """Build (or load the cached) index of the corpus's train split, or of its nested subset
    `config.index_fraction`, less the decontaminated chunks. Only what is indexed is embedded: a subset is cut
    from the cached full index where one exists, else its own rows are embedded and cached apart (the rows are
    the same either way). With an approximate `index_type` the same vectors go into that faiss index.
    `embed_max_tokens` is resolved first (None: the embedder's declared limit; past its positions: ValueError)."""
    config = dataclasses.replace(config, embed_max_tokens=embedder.max_tokens(config.embed_max_tokens))
    if "shard_rows" in corpus.manifest:  # the Pile layout: one index per shard, exact or approximate per shard
        return _sharded_index(config, corpus, embedder, progress)
    exact = _exact_index(config, corpus, embedder, progress)
    if config.index_type == "flat":
        return exact
    return approximate(exact, config, _test_embeddings(config, corpus, embedder, progress))


def _test_embeddings(config: StudyConfig, corpus: Corpus, embedder: Embedder, progress: bool) -> np.ndarray:
    """Embeddings of every test chunk, cached beside the full index (the leaky index and recall use them)."""
    cached = index_folder(config, corpus) / "test_embeddings.npy"
    if cached.exists():
        return np.load(cached)
    vectors = embedder.encode(corpus.texts(corpus.rows("test")), config.embed_max_tokens, progress=progress)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, vectors)
    return vectors


def _exact_index(config: StudyConfig, corpus: Corpus, embedder: Embedder, progress: bool = True) -> NeighborIndex:
    import time

    full_folder = index_folder(config, corpus)
    train_rows = corpus.rows("train")
    if len(train_rows) == 0:
        raise ValueError(f"corpus={config.corpus!r} has no train documents to index")
    if config.leaky_index:
        return _leaky_index(config, corpus, embedder, progress)
    keep = indexed_mask(config, corpus)
    selection = dict(index_fraction=config.index_fraction, decontam_threshold=config.decontam_threshold,
                     decontam_ngram=config.decontam_ngram, left_out=int((~keep).sum()))
    if (full_folder / "meta.json").exists():
        index = NeighborIndex.load(full_folder, config.embedder, corpus.fingerprint, config.embed_max_tokens)
        return index if keep.all() else index.subset(keep, load_embeddings(config, corpus), **selection)
    fraction = config.index_fraction
    # A subset depends on the seed that drew it (seed 0 keeps the name that subsets had before it was recorded).
    folder = full_folder if fraction == 1.0 else full_folder.with_name(
        f"{full_folder.name}-fraction{fraction:g}" + (f"-seed{config.seed}" if config.seed else ""))
    embedded = nested_subset(len(train_rows), fraction, config.seed)  # every row at fraction 1
    if (folder / "meta.json").exists():
        index = NeighborIndex.load(folder, config.embedder, corpus.fingerprint, config.embed_max_tokens)
        embeddings = np.load(folder / "embeddings.npy")
    else:
        start = time.perf_counter()
        embeddings = embedder.encode(corpus.texts(train_rows[embedded]), config.embed_max_tokens, progress=progress)
        seconds = time.perf_counter() - start
        meta = {"embedder": config.embedder, "dim": int(embeddings.shape[1]),
                "metric": "ip" if embedder.normalize else "l2", "corpus_fingerprint": corpus.fingerprint,
                "embed_max_tokens": config.embed_max_tokens, "embed_seconds": round(seconds, 1),
                "chunks_per_second": round(len(embeddings) / max(seconds, 1e-9), 1),  # indexing throughput
                "index_fraction": fraction, "embedded_documents": int(embedded.sum()),
                "peak_rss_mb": peak_rss_mb()}  # of the building process: an upper bound of the build's
        index = NeighborIndex.from_embeddings(embeddings, train_rows[embedded], meta)
        index.save(folder, embeddings)
    within = keep[embedded]  # the decontamination mask over the embedded rows
    return index if within.all() else index.subset(within, embeddings, **selection)


def sharded_index_folder(config: StudyConfig, corpus: Corpus) -> Path:
    """Where the per-shard indexes of a corpus in the Pile layout live: the single index's folder + '-shards'."""
    folder = index_folder(config, corpus)
    return folder.with_name(folder.name + "-shards")


def build_sharded_index(config: StudyConfig, corpus: Corpus, batches_for, dim: int, metric: str,
                        progress: bool = True, recall_queries=None):
    """The index of a corpus in the Pile layout: one exact index per train shard (`shards.build_shards`:
    resumable, one shard's vectors in memory), searched with the exact merge. `batches_for(start, stop)` gives the
    function that yields (rows, vectors) for a shard's rows, embedded here or by Ray workers
    (`scale.build_index_ray`): both write the same shards. With an approximate `index_type` each shard also gets
    that index, and its recall@k against the exact shards is measured on `recall_queries()` (test embeddings)."""
    from .shards import ShardedIndex, approximate_shards, build_shards

    meta = {"embedder": config.embedder, "embedder_tokenizer": config.embedder_tokenizer,
            "corpus_fingerprint": corpus.fingerprint, "embed_max_tokens": embed_tokens(config)}
    folder = sharded_index_folder(config, corpus)
    plan = [(name, batches_for(*bounds)) for name, bounds in corpus.manifest["shard_rows"].items()]
    build_shards(folder, plan, dim, metric, meta, progress)
    if config.index_type == "flat":
        return ShardedIndex(folder)
    approximate_shards(folder, config.index_type, config.index_nprobe, config.index_ef_search, config.seed, progress)
    index = ShardedIndex(folder, config.index_type, config.index_nprobe, config.index_ef_search)
    k = max(1, config.k)
    if f"recall@{k}" not in index.meta and recall_queries is not None:
        index.measure_recall(recall_queries(), k)
    return index


def recall_sample(config: StudyConfig, corpus: Corpus, embedder: Embedder, n: int = 200) -> np.ndarray:
    """Embeddings of a random `n` of the test documents: the queries an approximate index's recall is measured on
    (the Pile's test split is too large to embed whole for that)."""
    rows = corpus.rows("test")
    rows = np.sort(np.random.default_rng(config.seed).permutation(rows)[:n])
    return embedder.encode(corpus.texts(rows), embed_tokens(config))


def _sharded_index(config: StudyConfig, corpus: Corpus, embedder: Embedder, progress: bool):
    def batches_for(start: int, stop: int, size: int = 4096):
        def embedded():
            for lo in range(start, stop, size):
                rows = np.arange(lo, min(lo + size, stop))
                yield rows, embedder.encode(corpus.texts(rows), config.embed_max_tokens)
        return embedded

    return build_sharded_index(config, corpus, batches_for, embedder.dim, "ip" if embedder.normalize else "l2",
                               progress, lambda: recall_sample(config, corpus, embedder))


def _leaky_index(config: StudyConfig, corpus: Corpus, embedder: Embedder, progress: bool) -> NeighborIndex:
    """Every chunk of the corpus, train and test, undecontaminated: the leakage control. Retrieval leaves out the
    test document's own source (`retrieve(exclude=...)`), so what it can find is what a split by file leaves in."""
    clean = _exact_index(dataclasses.replace(config, leaky_index=False, decontam_threshold=None, index_fraction=1.0),
                         corpus, embedder, progress)
    test_rows = corpus.rows("test")
    test_embeddings = _test_embeddings(config, corpus, embedder, progress)
    embeddings = np.concatenate([load_embeddings(config, corpus), test_embeddings])
    return NeighborIndex.from_embeddings(embeddings, np.concatenate([clean.rows, test_rows]),
                                         dict(clean.meta, leaky_index=True, decontam_threshold=None))
