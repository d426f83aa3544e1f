"""The sharded index: the exact merge equals one flat index over everything, and a killed build resumes."""
import faiss
import numpy as np
import pytest

from ttt_core.shards import ShardedIndex, approximate_shards, build_shards, finished_shards, merge_top_k


def vectors(n=600, dim=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def shard_plan(x, bounds, calls=None, fail_at=None):
    """(name, batches) per shard of x cut at `bounds`, batches of 50 rows; rows are global positions."""
    def batches(name, lo, hi):
        def gen():
            if calls is not None:
                calls.append(name)
            for start in range(lo, hi, 50):
                if fail_at is not None and start >= fail_at:
                    raise KeyboardInterrupt("killed mid-shard")
                stop = min(start + 50, hi)
                yield np.arange(start, stop), x[start:stop]
        return gen
    edges = [0, *bounds, len(x)]
    return [(f"{i:02d}", batches(f"{i:02d}", lo, hi)) for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_sharded_search_is_one_flat_index(tmp_path, metric):
    x = vectors()
    if metric == "ip":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    build_shards(tmp_path, shard_plan(x, [130, 400]), dim=16, metric=metric, progress=False)
    queries = vectors(25, seed=1)
    if metric == "ip":
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = faiss.IndexFlatL2(16)
    flat.add(x)
    want_d, want_rows = flat.search(queries, 50)
    got_d, got_rows = ShardedIndex(tmp_path).search(queries, 50)
    assert np.array_equal(got_rows, want_rows)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-4, atol=1e-4)
    assert len(ShardedIndex(tmp_path)) == len(x)


def test_merge_breaks_ties_by_row_and_puts_missing_places_last():
    d, r = merge_top_k([np.array([[1.0, 2.0]]), np.array([[1.0, 0.5, 9.0]])], [np.array([[7, 3]]), np.array([[2, 9, -1]])], 4)
    assert r.tolist() == [[9, 2, 7, 3]] and d.tolist() == [[0.5, 1.0, 1.0, 2.0]]
    d, r = merge_top_k([np.array([[3.0, 0.0]])], [np.array([[4, -1]])], 2)
    assert r.tolist() == [[4, -1]] and d[0, 1] == np.inf


def test_a_killed_build_keeps_finished_shards_and_resumes(tmp_path):
    x = vectors()
    calls = []
    with pytest.raises(KeyboardInterrupt):
        build_shards(tmp_path, shard_plan(x, [200, 400], calls, fail_at=450), dim=16, progress=False)
    assert finished_shards(tmp_path) == ["00", "01"]  # shard 02 died half-way and left no index file
    assert not (tmp_path / "02.faiss").exists()
    calls.clear()
    built = build_shards(tmp_path, shard_plan(x, [200, 400], calls), dim=16, progress=False)
    assert built == ["02"] and calls == ["02"]  # finished shards are not re-embedded
    flat = faiss.IndexFlatL2(16)
    flat.add(x)
    queries = vectors(5, seed=2)
    assert np.array_equal(ShardedIndex(tmp_path).search(queries, 10)[1], flat.search(queries, 10)[1])


def test_shards_of_another_configuration_are_refused(tmp_path):
    x = vectors(100)
    build_shards(tmp_path, shard_plan(x, [50]), dim=16, meta={"embedder": "a"}, progress=False)
    with pytest.raises(ValueError, match="holds shards built with"):
        build_shards(tmp_path, shard_plan(x, [50]), dim=16, meta={"embedder": "b"}, progress=False)
    with pytest.raises(ValueError, match="invalid metric='cos'"):
        build_shards(tmp_path / "other", [], dim=16, metric="cos")


@pytest.mark.parametrize("index_type, setting", [("ivf", {"nprobe": 10_000}), ("hnsw", {"ef_search": 512})])
def test_approximate_shards_are_built_once_beside_the_exact_ones_and_report_their_recall(tmp_path, index_type, setting):
    x = vectors()
    build_shards(tmp_path, shard_plan(x, [200, 400]), dim=16, progress=False)
    with pytest.raises(ValueError, match=f"have no {index_type} index: build them with approximate_shards"):
        ShardedIndex(tmp_path, index_type)
    assert approximate_shards(tmp_path, index_type, progress=False) == ["00", "01", "02"]
    assert finished_shards(tmp_path) == ["00", "01", "02"]  # the approximate files are not taken for shards
    (tmp_path / f"01.{index_type}.faiss").unlink()
    assert approximate_shards(tmp_path, index_type, progress=False) == ["01"]  # a finished one is never rebuilt
    index = ShardedIndex(tmp_path, index_type, **setting)
    queries = vectors(20, seed=3)
    # Probing every cell (or a search list longer than the shard) makes the approximate search exhaustive.
    assert index.measure_recall(queries, 10) >= (1.0 if index_type == "ivf" else 0.98)
    reopened = ShardedIndex(tmp_path, index_type, **setting)
    assert reopened.meta["recall@10"] == index.meta["recall@10"] and reopened.meta["index_type"] == index_type
    assert "recall@10" not in ShardedIndex(tmp_path, index_type, nprobe=1, ef_search=1).meta  # another setting
    if index_type == "ivf":
        flat = faiss.IndexFlatL2(16)
        flat.add(x)
        assert np.array_equal(index.search(queries, 10)[1], flat.search(queries, 10)[1])
        few = ShardedIndex(tmp_path, "ivf", nprobe=1)
        assert few.measure_recall(queries, 10) < 1.0  # one cell of each shard misses some neighbours
    with pytest.raises(ValueError, match="invalid index_type='lsh'"):
        ShardedIndex(tmp_path, "lsh")


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_tied_neighbours_in_shards_are_ordered_by_row_for_every_k(tmp_path, index_type):
    """A tie cut at the k-th place inside one shard would let that shard send any of the tied rows to the merge:
    each shard searches past the tie, so the merged first k of any larger k are the k, lowest row first."""
    x = vectors(200, dim=8)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tied = [3, 17, 40, 41, 90, 150, 151]  # in both shards
    x[tied] = x[3]
    build_shards(tmp_path, shard_plan(x, [100]), dim=8, metric="ip", progress=False)
    if index_type != "flat":
        approximate_shards(tmp_path, index_type, nprobe=64, ef_search=256, progress=False)
    index = ShardedIndex(tmp_path, index_type, nprobe=64, ef_search=256)
    answers = [index.search(x[3:4], k)[1][0].tolist() for k in range(1, 10)]
    for k, found in enumerate(answers, start=1):
        assert found == answers[-1][:k], f"k={k}"
    assert answers[-1][:len(tied)] == tied
