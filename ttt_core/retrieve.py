"""Nearest-neighbour retrieval for a test document, as the paper: embed its first `embed_max_tokens`
embedder tokens (None: the embedder's declared limit), search the index, return the k nearest train documents,
nearest first."""
from __future__ import annotations

from dataclasses import dataclass

from .corpus import Corpus
from .index import NeighborIndex
from .models import Embedder
from .search import Retriever
from .static import STATIC_EMBEDDERS


@dataclass(frozen=True)
class Neighbor:
    """One retrieved train chunk: its corpus row and id, domain, distance (smaller is nearer) and text."""
    row: int
    doc_id: str
    domain: str
    distance: float  # squared L2 between embeddings; minus the BM25 score for retriever='bm25' (retrievers)
    text: str


def retrieve(query: str, k: int, embedder: Embedder | None, index: Retriever, corpus: Corpus,
             embed_max_tokens: int | None = None, exclude=()) -> list[Neighbor]:
    """The k nearest indexed chunks, nearest first, leaving out the corpus rows in `exclude` (the leaky index
    holds the test document's own source, which must never be its own neighbour). `index` is any index kind
    (`search.Retriever`); a dense one is queried through `embedder`."""
    if k < 0:
        raise ValueError(f"invalid k={k!r}: expected an integer >= 0")
    if k == 0:
        return []
    exclude = {int(r) for r in exclude}
    # Ties come in corpus-row order (`Retriever.search_texts`), so leaving out a fixed set keeps the first k of
    # this search the first k of any larger one. An approximate index may find fewer than asked (row -1): never a
    # neighbour.
    distances, rows = index.search_texts([query], k + len(exclude), embedder, embed_max_tokens)
    kept = [(int(r), float(d)) for r, d in zip(rows[0], distances[0]) if int(r) >= 0 and int(r) not in exclude][:k]
    if len(kept) < k:  # fewer rows would store a run that is not the k it names
        raise ValueError(f"k={k} neighbours asked, but the index (of {len(index)} chunks, {len(exclude)} rows "
                         f"excluded) found only {len(kept)}: {remedy(index, k + len(exclude))}")
    records = corpus.dataset.select([r for r, _ in kept])
    return [Neighbor(r, rec["id"], rec["domain"], d, rec["text"]) for (r, d), rec in zip(kept, records)]


def remedy(index: Retriever, wanted: int) -> str:
    """What to change when a search found fewer than `wanted`: an approximate index that holds enough chunks
    missed some (probe more), an exact one holds too few."""
    if index.meta.get("retriever") == "bm25":
        return ("BM25 returns only chunks that share a term with the query (a text of emoji or punctuation shares "
                "none); use a smaller k, a dense retriever or retriever='rerank' with a dense first stage")
    kind = index.meta.get("index_type", "flat")  # a sharded index says it in its meta too
    if kind != "flat" and len(index) >= wanted:
        return (f"the approximate index (index_type={kind!r}) holds enough chunks but its search missed some; raise "
                f"index_nprobe (ivf) or index_ef_search (hnsw), or use index_type='flat'")
    if len(index) >= wanted and index.meta.get("embedder") in STATIC_EMBEDDERS:
        # An exact index that holds enough chunks finds fewer only for a query without a vector.
        return (f"a static embedder ({index.meta['embedder']}) gives a text with no token of its vocabulary (emoji "
                f"only, say) no vector and so no neighbour; use a transformer embedder ('minilm') or BM25")
    return "use a smaller k or a larger corpus"


def indexed_domains(index: Retriever, corpus: Corpus):
    """The domain of each indexed chunk, in `index.rows` order (numpy array of str)."""
    import numpy as np

    return np.asarray(corpus.dataset.select_columns(["domain"]).select(index.rows.tolist())["domain"])


def random_neighbors(document: dict, k: int, rule: str, index: Retriever, corpus: Corpus,
                     seed: int = 0) -> list[Neighbor]:
    """The controls for retrieval itself: k indexed train chunks drawn at random, from the test document's own
    domain ('random-domain') or from the whole index ('random-any'), seeded by the run's seed and the document, so
    that every run draws the same chunks for a document. Distances are not defined (NaN)."""
    import hashlib

    import numpy as np

    if rule not in ("random-domain", "random-any"):
        raise ValueError(f"invalid neighbors={rule!r}: expected 'random-domain' or 'random-any'")
    candidates = index.rows
    if rule == "random-domain":
        candidates = candidates[indexed_domains(index, corpus) == document["domain"]]
    if len(candidates) < k:
        raise ValueError(f"k={k} neighbours asked, but neighbors={rule!r} can draw only {len(candidates)} indexed "
                         f"chunks" + (f" of domain {document['domain']!r}" if rule == "random-domain" else "")
                         + ": use a smaller k or a larger corpus")
    doc_seed = int.from_bytes(hashlib.sha256(f"{seed}:{rule}:{document['id']}".encode()).digest()[:8], "little")
    # A permutation cut at k, so that the chunks of a run with fewer neighbours are the first ones of a larger run.
    picked = np.random.default_rng(doc_seed).permutation(candidates)[:k]
    records = corpus.dataset.select([int(r) for r in picked])
    return [Neighbor(int(r), rec["id"], rec["domain"], float("nan"), rec["text"]) for r, rec in zip(picked, records)]


def selected_neighbors(query: str, k: int, rule: str, pool: int, embedder: Embedder, index: NeighborIndex,
                       corpus: Corpus, embed_max_tokens: int | None = None, exclude=(), lam: float = 0.01) -> list[Neighbor]:
    """k training steps chosen by `rule` (see `select`) from the `pool` nearest candidates (0: 4 k): the same
    candidates for every rule, so rules differ only in what they pick. HullFT may repeat a candidate. Dense and
    one faiss index only (`NeighborIndex.search_ids`: the candidates' vectors are reconstructed by faiss id)."""
    import numpy as np

    from .select import select

    if k == 0:
        return []
    pool = pool or 4 * k
    exclude = {int(r) for r in exclude}
    vector = embedder.encode([query], embed_max_tokens)
    # The pool in (distance, row) order, as `retrieve`: a tie at the pool's edge gives the same candidates always.
    _, ids = index.search_ids(vector, pool + len(exclude))
    # A query embedded as zeros has no direction (every chunk ties): no candidates, as `DenseRetriever`.
    keep = [int(i) for i in ids[0] if i >= 0 and int(index.rows[i]) not in exclude][:pool] if vector.any() else []
    if len(keep) < pool:  # the rules must choose from the same `pool` candidates in every run
        raise ValueError(f"k={k} with selection={rule!r} needs a pool of {pool} candidates, but the index (of "
                         f"{len(index)} chunks, {len(exclude)} rows excluded) found only {len(keep)}: "
                         f"{remedy(index, pool + len(exclude))}")
    direct_map = getattr(index.index, "direct_map", None)  # IVF reconstructs by id only with a direct map
    if direct_map is not None and direct_map.type == 0:  # made once per index, not per query
        index.index.make_direct_map()
    vectors = np.stack([index.index.reconstruct(i) for i in keep])
    distances = ((vectors - vector[0]) ** 2).sum(1)
    picks = select(rule, vector[0], vectors, distances, k, lam)
    rows = [int(index.rows[keep[p]]) for p in picks]
    records = {r: rec for r, rec in zip(sorted(set(rows)), corpus.dataset.select(sorted(set(rows))))}
    return [Neighbor(r, records[r]["id"], records[r]["domain"], float(distances[p]), records[r]["text"])
            for r, p in zip(rows, picks)]
