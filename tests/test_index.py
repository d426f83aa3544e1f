import numpy as np
import pytest

from ttt_core.config import StudyConfig
from ttt_core.corpus import build_corpus
from ttt_core.index import NeighborIndex, build_index, index_folder
from ttt_core.models import load_embedder
from ttt_core.retrieve import retrieve


def test_inner_product_distances_equal_squared_l2_for_unit_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.arange(100, 150)
    ip = NeighborIndex.from_embeddings(vectors, rows, {"metric": "ip"})
    l2 = NeighborIndex.from_embeddings(vectors, rows, {"metric": "l2"})
    d_ip, r_ip = ip.search(vectors[:5], 4)
    d_l2, r_l2 = l2.search(vectors[:5], 4)
    np.testing.assert_array_equal(r_ip, r_l2)
    np.testing.assert_allclose(d_ip, d_l2, atol=1e-5)
    assert (r_ip[:, 0] == rows[:5]).all() and np.all(np.diff(d_l2, axis=1) >= -1e-6)  # nearest first


def test_index_round_trip_and_mismatch_errors(tiny_params, tmp_path):
    config = StudyConfig.from_params(**tiny_params)
    corpus = build_corpus(config, progress=False)
    embedder = load_embedder(config.embedder, config.work_path, "cpu")
    index = build_index(config, corpus, embedder, progress=False)
    assert len(index) == len(corpus.rows("train")) and set(index.rows) == set(corpus.rows("train"))
    folder = index_folder(config, corpus)
    loaded = NeighborIndex.load(folder, config.embedder, corpus.fingerprint, config.embed_max_tokens)
    assert loaded.meta == index.meta
    with pytest.raises(ValueError, match="corpus_fingerprint"):
        NeighborIndex.load(folder, config.embedder, "another-corpus")
    with pytest.raises(ValueError, match="embedder"):
        NeighborIndex.load(folder, "minilm", corpus.fingerprint)


def test_retrieval_returns_train_documents_nearest_first(tiny_params):
    config = StudyConfig.from_params(**tiny_params)
    corpus = build_corpus(config, progress=False)
    embedder = load_embedder(config.embedder, config.work_path, "cpu")
    index = build_index(config, corpus, embedder, progress=False)
    train_doc = corpus.record(int(corpus.rows("train")[0]))
    neighbors = retrieve(train_doc["text"], 5, embedder, index, corpus)
    assert len(neighbors) == 5 and neighbors[0].doc_id == train_doc["id"] and neighbors[0].distance < 1e-4
    assert [n.distance for n in neighbors] == sorted(n.distance for n in neighbors)
    assert all(corpus.record(n.row)["split"] == "train" for n in neighbors)
    assert retrieve(train_doc["text"], 0, embedder, index, corpus) == []
    with pytest.raises(ValueError, match="invalid k=-1"):
        retrieve(train_doc["text"], -1, embedder, index, corpus)


def test_nested_subsets_grow_by_inclusion():
    from ttt_core.index import nested_subset

    masks = [nested_subset(200, f, seed=3) for f in (0.01, 0.05, 0.25, 1.0)]
    assert [m.sum() for m in masks] == [2, 10, 50, 200]
    assert all((small <= big).all() for small, big in zip(masks, masks[1:]))


def test_index_fraction_builds_a_smaller_index_from_the_cached_embeddings(tiny_params):
    from ttt_core.index import exact_duplicates, load_embeddings

    config = StudyConfig.from_params(**tiny_params)
    corpus = build_corpus(config, progress=False)
    embedder = load_embedder(config.embedder, config.work_path, "cpu")
    full = build_index(config, corpus, embedder, progress=False)
    half = build_index(StudyConfig.from_params(**{**tiny_params, "index_fraction": 0.5}), corpus, embedder,
                       progress=False)
    assert len(half) == round(len(full) / 2) and set(half.rows) < set(full.rows)
    queries = load_embeddings(config, corpus)[:10]
    assert exact_duplicates(full, queries) == 10  # train vectors find themselves
    profile_full, profile_half = full.distance_profile(queries, 5), half.distance_profile(queries, 5)
    assert np.all(np.diff(profile_full) >= -1e-6) and np.all(profile_half >= profile_full - 1e-6)


def test_a_subset_index_without_a_full_one_embeds_only_its_rows(tiny_params):
    """The second embedder of the index-quality ablation indexes a subset without embedding everything."""
    half_config = StudyConfig.from_params(**{**tiny_params, "index_fraction": 0.5})
    corpus = build_corpus(half_config, progress=False)
    embedder = load_embedder(half_config.embedder, half_config.work_path, "cpu")
    calls = []
    encode = embedder.encode
    embedder.encode = lambda texts, *a, **kw: calls.append(len(texts)) or encode(texts, *a, **kw)
    half = build_index(half_config, corpus, embedder, progress=False)
    assert calls == [len(half)] and not (index_folder(half_config, corpus) / "meta.json").exists()
    assert build_index(half_config, corpus, embedder, progress=False).rows.tolist() == half.rows.tolist()
    assert calls == [len(half)]  # the second call loaded the cached subset
    full = build_index(StudyConfig.from_params(**tiny_params), corpus, embedder, progress=False)
    cut = build_index(half_config, corpus, embedder, progress=False)  # now cut from the full index
    assert cut.rows.tolist() == half.rows.tolist() and len(full) > len(half)
    np.testing.assert_allclose(cut.search(np.eye(1, full.index.d, dtype=np.float32), 3)[0],
                               half.search(np.eye(1, full.index.d, dtype=np.float32), 3)[0], atol=1e-5)


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_an_approximate_index_reports_its_recall_against_exact_search(tiny_params, index_type):
    """The approximate option keeps the exact index's rows and vectors, measures recall@k on the held-out test
    chunks, and (IVF probing every cell, HNSW with a wide search) finds what exact search finds."""
    params = {**tiny_params, "index_type": index_type, "index_nprobe": 10_000, "index_ef_search": 512}
    config = StudyConfig.from_params(**params).validate()
    corpus = build_corpus(config, progress=False)
    embedder = load_embedder(config.embedder, config.work_path, "cpu")
    exact = build_index(StudyConfig.from_params(**tiny_params), corpus, embedder, progress=False)
    index = build_index(config, corpus, embedder, progress=False)
    k = min(config.k, len(exact))
    assert index.meta["index_type"] == index_type and index.meta[f"recall@{k}"] == pytest.approx(1.0)
    assert index.meta["recall_queries"] == len(corpus.rows("test")) and sorted(index.rows) == sorted(exact.rows)
    doc = corpus.test_documents(1, 0)[0]
    found = retrieve(doc["text"], k, embedder, index, corpus)
    assert [n.row for n in found] == [n.row for n in retrieve(doc["text"], k, embedder, exact, corpus)]
    with pytest.raises(ValueError, match="invalid index_type='lsh'"):
        StudyConfig.from_params(**{**tiny_params, "index_type": "lsh"}).validate()


def test_missing_results_of_an_approximate_index_are_never_neighbours(tiny_params):
    """faiss marks places an approximate index could not fill with id -1: they map to row -1 at distance inf
    (never to the last corpus row), and retrieval skips them."""
    class Sparse:  # a faiss index that found one of the two asked neighbours
        ntotal = 3

        def search(self, queries, k):
            return np.array([[0.5, 0.0]], dtype=np.float32)[:, :k], np.array([[1, -1]])[:, :k]

    index = NeighborIndex(Sparse(), np.array([10, 11, 12]), {"metric": "l2"})
    distances, rows = index.search(np.zeros((1, 4), dtype=np.float32), 2)
    assert rows.tolist() == [[11, -1]] and distances[0, 0] == 0.5 and np.isinf(distances[0, 1])


def tied_vectors(metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Eight unit vectors of which the ones at positions 0, 1, 3 and 5 are identical (documents that embed alike),
    held at corpus rows that run against the faiss ids, so an order by id is not an order by row."""
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[[1, 3, 5]] = x[0]
    return x, np.array([70, 60, 50, 40, 30, 20, 10, 0])


@pytest.mark.parametrize("index_type", ["flat-ip", "flat-l2", "ivf", "hnsw"])
def test_tied_neighbours_are_ordered_by_row_so_k_is_a_prefix_of_a_larger_k(index_type):
    """faiss returns a tie in another order for another k (IndexFlatIP: k=1 gives id 0, k=4 gives 5, 3, 1, 0), so a
    run with k=1 trained on another neighbour than the first of a k=3 run. Ties are ordered by corpus row, and the
    search looks past the k-th place until the tie is complete, so the first k of any k' > k are the k."""
    from ttt_core.search import approximate_structure

    x, rows = tied_vectors("ip")
    if index_type.startswith("flat"):
        index = NeighborIndex.from_embeddings(x, rows, {"metric": index_type[5:]})
    else:
        structure, _ = approximate_structure(x, "ip", index_type, nprobe=10, ef_search=64)
        index = NeighborIndex(structure, rows, {"metric": "ip"})
    answers = [index.search(x[:1], k) for k in range(1, 9)]
    for k, (distances, found) in enumerate(answers, start=1):
        assert found[0].tolist() == answers[-1][1][0, :k].tolist(), f"k={k}"
    assert answers[-1][1][0, :4].tolist() == [20, 40, 60, 70]  # the four tied rows, lowest row first
    assert answers[-1][0][0, 3] < answers[-1][0][0, 4]


def test_retrieval_and_selection_pools_take_tied_neighbours_by_row(tiny_params):
    """The same rule on every search path: `retrieve` (with and without the leaky index's exclusion) and the
    candidate pool of `selected_neighbors`."""
    from ttt_core.retrieve import selected_neighbors

    config = StudyConfig.from_params(**tiny_params)
    corpus = build_corpus(config, progress=False)
    train = corpus.rows("train")[:8]
    x, _ = tied_vectors("ip")
    rows = train[::-1].copy()  # faiss id i holds corpus row rows[i]: ids and rows run against each other

    class Fixed:  # an embedder that embeds every query as the tied vector
        def encode(self, texts, max_tokens=None, **kw):
            return x[:1].copy()

    index = NeighborIndex.from_embeddings(x, rows, {"metric": "ip"})
    tied = sorted(int(r) for r in rows[[0, 1, 3, 5]])
    for k in range(1, 5):
        assert [n.row for n in retrieve("q", k, Fixed(), index, corpus)] == tied[:k]
        assert [n.row for n in retrieve("q", k, Fixed(), index, corpus, exclude=[tied[0]])][:3] == tied[1:k + 1]
    for pool in range(1, 5):
        picked = selected_neighbors("q", pool, "nearest", pool, Fixed(), index, corpus)
        assert [n.row for n in picked] == tied[:pool]


def test_index_caches_are_named_by_the_tokens_actually_embedded(tiny_params):
    """embed_max_tokens None is the embedder's declared limit (tiny-bert: its 256 positions): the index is
    named and checked by that number, so None and 256 share one cache and 64 never does."""
    config = StudyConfig.from_params(**tiny_params)
    assert config.validate().embed_max_tokens is None
    corpus = build_corpus(config, progress=False)
    embedder = load_embedder(config.embedder, config.work_path, "cpu")
    index = build_index(config, corpus, embedder, progress=False)
    assert index.meta["embed_max_tokens"] == 256 and index_folder(config, corpus).name.endswith("-256")
    calls = []
    encode = embedder.encode
    embedder.encode = lambda texts, *a, **kw: calls.append(len(texts)) or encode(texts, *a, **kw)
    same = StudyConfig.from_params(**tiny_params, embed_max_tokens=256)
    assert index_folder(same, corpus) == index_folder(config, corpus)
    build_index(same, corpus, embedder, progress=False)
    assert calls == []
    short = StudyConfig.from_params(**tiny_params, embed_max_tokens=64)
    assert build_index(short, corpus, embedder, progress=False).meta["embed_max_tokens"] == 64 and calls
    with pytest.raises(ValueError, match="invalid embed_max_tokens=512"):
        build_index(StudyConfig.from_params(**tiny_params, embed_max_tokens=512), corpus, embedder, progress=False)
