"""The index at the paper's scale: one faiss index per corpus shard, built shard by shard and searched with an
exact merge of the per-shard top-k, so that the answer equals one flat index over every shard.

The official code served 30 shard indexes from 180 socket servers and merged their replies on the client
(socialfoundations/tttlm @ 99d4e0a: `code/pile_server.py`, `code/pile_index.py`, the merge in `code/pile_client.py`;
its README: 30 servers with 6 replicas each). Here a shard is a pair of files in one folder, `<name>.faiss` and
`<name>.rows.npy` (the global row of each vector), moved into place only when complete: a killed build leaves no half
shard, and the next build skips every finished one. Search reads one shard at a time (memory-mapped), so memory is
bounded by the largest shard; `merge_top_k` is the one merge rule, also used where shards live in other processes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .config import INDEX_TYPES
from .search import DenseSearch, approximate_structure, distance_row_order, recall_at_k, tie_stable_search

METRICS = ("l2", "ip")


def merge_top_k(distances: list[np.ndarray], rows: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances per query over the shards' answers (each of shape [queries, k_shard]), ties broken
    by the lower global row so the order never depends on how the corpus was sharded; missing places (row -1,
    as an approximate index may leave) sort last. Each shard's answer must itself hold its first k in this order
    (`tie_stable_search`), or a tie cut at a shard's k-th place could send any of its tied rows."""
    d = np.concatenate(distances, axis=1).astype(np.float64)
    r = np.concatenate(rows, axis=1).astype(np.int64)
    order = distance_row_order(d, r, k)
    return np.take_along_axis(np.where(r < 0, np.inf, d), order, axis=1), np.take_along_axis(r, order, axis=1)


class ShardedIndex(DenseSearch):
    """Nearest neighbours over the finished shards in `folder` (squared L2 distances, global rows): exact, or with
    `index_type` 'ivf' or 'hnsw' each shard's approximate index (`approximate_shards`), merged by the same rule.
    A `search.Retriever` (its text search embeds, then `search`)."""

    def __init__(self, folder: Path | str, index_type: str = "flat", nprobe: int = 32, ef_search: int = 128):
        if index_type not in INDEX_TYPES:
            raise ValueError(f"invalid index_type={index_type!r}: expected one of {list(INDEX_TYPES)}")
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.shards = finished_shards(self.folder)
        if not self.shards:
            raise ValueError(f"no finished shard in {self.folder}: build them with build_shards()")
        self.index_type, self.nprobe, self.ef_search = index_type, nprobe, ef_search
        self._opened = {}  # approximate shards read so far (the flat ones are memory-mapped at each search)
        if index_type != "flat":
            missing = [n for n in self.shards if not (self.folder / f"{n}.{index_type}.faiss").exists()]
            if missing:
                raise ValueError(f"shards {missing} of {self.folder} have no {index_type} index: build them with "
                                 "approximate_shards()")
            recall = self.recall_path()
            self.meta = dict(self.meta, index_type=index_type, **({"nprobe": nprobe} if index_type == "ivf" else
                                                                  {"efSearch": ef_search}),
                             **(json.loads(recall.read_text()) if recall.exists() else {}))

    def settings(self) -> dict:
        """What another process needs to open the same index (`ShardedIndex(folder, **settings())`)."""
        return {"index_type": self.index_type, "nprobe": self.nprobe, "ef_search": self.ef_search}

    def __len__(self) -> int:
        return sum(len(np.load(self.folder / f"{name}.rows.npy", mmap_mode="r")) for name in self.shards)

    @property
    def metric(self) -> str:
        """'ip' (cosine on L2-normalised vectors) or 'l2', as every shard was built."""
        return self.meta["metric"]

    @property
    def rows(self) -> np.ndarray:
        """The corpus row of every indexed vector, shard after shard (the random-neighbour controls draw from it)."""
        return np.concatenate([np.load(self.folder / f"{name}.rows.npy") for name in self.shards])

    def search_shard(self, name: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One shard's top-k as (squared L2 distances, global rows), ties by row (`tie_stable_search`)."""
        import faiss

        if self.index_type == "flat":
            index = faiss.read_index(str(self.folder / f"{name}.faiss"), faiss.IO_FLAG_MMAP)
        elif name in self._opened:
            index = self._opened[name]
        else:  # read once and kept: re-reading a whole approximate index per query would cost more than it saves
            index = faiss.read_index(str(self.folder / f"{name}.{self.index_type}.faiss"))
            if self.index_type == "ivf":
                index.nprobe = min(self.nprobe, index.nlist)
            else:
                index.hnsw.efSearch = self.ef_search
            self._opened[name] = index
        rows = np.load(self.folder / f"{name}.rows.npy")

        def search(q: np.ndarray, n: int):
            scores, ids = index.search(q, n)
            return (2.0 - 2.0 * scores if self.meta["metric"] == "ip" else scores), ids  # unit vectors

        distances, ids = tie_stable_search(search, queries, k, int(index.ntotal), rows)
        return distances, np.where(ids < 0, -1, rows[np.maximum(ids, 0)])

    def search(self, queries: np.ndarray, k: int, shards: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k over `shards` (default: all of them)."""
        answers = [self.search_shard(name, queries, k) for name in (self.shards if shards is None else shards)]
        return merge_top_k([a[0] for a in answers], [a[1] for a in answers], k)

    def recall_path(self) -> Path:
        """Where the recall of this index at its search setting is kept (it depends on nprobe or efSearch)."""
        setting = f"nprobe{self.nprobe}" if self.index_type == "ivf" else f"ef{self.ef_search}"
        return self.folder / f"{self.index_type}-{setting}.recall.json"

    def measure_recall(self, queries: np.ndarray, k: int) -> float:
        """Recall@k of this (approximate) index against the exact shards on `queries`, kept beside the shards and
        in `meta`, so every run that uses the index says what it costs."""
        value = recall_at_k(self.search(queries, k)[1], ShardedIndex(self.folder).search(queries, k)[1])
        record = {f"recall@{k}": value, "recall_queries": int(len(queries))}
        if self.index_type != "flat":
            self.recall_path().write_text(json.dumps(record, indent=1))
        self.meta = dict(self.meta, **record)
        return value


def approximate_shards(folder: Path | str, index_type: str, nprobe: int = 32, ef_search: int = 128, seed: int = 0,
                       progress: bool = True) -> list[str]:
    """Beside each finished exact shard, an approximate index of its vectors (`<name>.<index_type>.faiss`, read
    back from the exact shard: nothing is embedded again). Resumable like `build_shards`: a finished one is
    never rebuilt, and each is moved into place only when complete. Memory: one shard's vectors and its index."""
    import faiss
    from tqdm import tqdm

    folder = Path(folder)
    metric = json.loads((folder / "meta.json").read_text())["metric"]
    built = []
    for name in tqdm(finished_shards(folder), desc=f"{index_type} shards", unit="shard", disable=not progress):
        target = folder / f"{name}.{index_type}.faiss"
        if target.exists():
            continue
        exact = faiss.read_index(str(folder / f"{name}.faiss"))
        x = np.ascontiguousarray(exact.reconstruct_n(0, exact.ntotal), dtype=np.float32)
        structure, _ = approximate_structure(x, metric, index_type, nprobe, ef_search, seed)
        tmp = target.with_name(target.name + ".tmp")
        faiss.write_index(structure, str(tmp))
        os.replace(tmp, target)
        built.append(name)
    return built


def finished_shards(folder: Path) -> list[str]:
    """Names of the shards whose files are both in place, in name order."""
    return sorted(p.name[:-len(".faiss")] for p in Path(folder).glob("*.faiss")
                  if (p.parent / f"{p.name[:-len('.faiss')]}.rows.npy").exists())


def build_shards(folder: Path | str, shards: Iterable[tuple[str, Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]]],
                 dim: int, metric: str = "l2", meta: dict | None = None, progress: bool = True) -> list[str]:
    """Build one flat faiss index per shard: `shards` yields (name, batches) where batches() yields
    (global rows, vectors) a batch at a time (the embedder's output). A shard already finished is skipped without
    calling its batches(), so a killed build resumes where it stopped; memory is one shard's vectors."""
    import faiss
    from tqdm import tqdm

    if metric not in METRICS:
        raise ValueError(f"invalid metric={metric!r}: expected one of {list(METRICS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    meta = dict(meta or {}, dim=dim, metric=metric)
    if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
        raise ValueError(f"{folder} holds shards built with {json.loads(meta_path.read_text())}, not {meta}: "
                         "use another folder or delete it")
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True))
    done = set(finished_shards(folder))
    built = []
    for name, batches in tqdm(list(shards), desc="index shards", unit="shard", disable=not progress):
        if name in done:
            continue
        index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        rows = []
        for batch_rows, vectors in batches():
            vectors = np.nan_to_num(np.ascontiguousarray(vectors, dtype=np.float32))  # official: NaN -> 0
            if vectors.shape[1:] != (dim,):
                raise ValueError(f"shard {name!r}: vectors of shape {vectors.shape}, expected (n, {dim})")
            index.add(vectors)
            rows.append(np.asarray(batch_rows, dtype=np.int64))
        tmp_index, tmp_rows = folder / f"{name}.faiss.tmp", folder / f"{name}.rows.npy.tmp"
        faiss.write_index(index, str(tmp_index))
        with open(tmp_rows, "wb") as f:
            np.save(f, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))
        os.replace(tmp_rows, folder / f"{name}.rows.npy")  # the index file last: its presence marks "finished"
        os.replace(tmp_index, folder / f"{name}.faiss")
        built.append(name)
    return built
