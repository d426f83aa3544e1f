"""The layout (issue 24): no import circle among ttt_core's modules, and every index kind is a `search.Retriever`
that answers `search_texts` by its rules (shapes, dtypes, order, -1 places)."""
import ast
from pathlib import Path

import numpy as np
import pytest
from test_shards import shard_plan, vectors

from ttt_core.config import StudyConfig
from ttt_core.search import DenseSearch, Retriever


PACKAGE = Path(__file__).resolve().parents[1] / "ttt_core"


def import_graph() -> dict[str, set[str]]:
    """module -> the ttt_core modules it imports, at module level or inside a function (`from .x import`,
    `from . import x`, `import ttt_core.x`, `from ttt_core.x import`). A subpackage (ttt_core/minipile/) is one
    module: its files' imports of ttt_core (`from ..x import`) are its edges, those among its own files are not."""
    files = {p.stem: [p] for p in PACKAGE.glob("*.py")}
    files |= {d.name: sorted(d.glob("*.py")) for d in PACKAGE.iterdir() if (d / "__init__.py").is_file()}
    modules = set(files)
    graph = {}
    for module, paths in files.items():
        found = set()
        for path in paths:
            top = 1 if path.parent == PACKAGE else 2  # the relative level that names ttt_core itself
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == top:
                    found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ttt_core"):
                    found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
                elif isinstance(node, ast.Import):
                    found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ttt_core.")}
        graph[module] = (found & modules) - {module}
    return graph


def test_no_import_circle_among_the_modules():
    graph, state, circles = import_graph(), {}, []

    def visit(module, path):  # depth first; a module met again on the current path closes a circle
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert "config" in graph["index"] and "config" in graph["shards"]  # the graph is read (not empty by a slip)
    assert "metrics" in graph["minipile"] and "minipile" in graph["corpus"]  # and the subpackage with it
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


class Table:
    """An embedder by lookup: text i of `texts` is vector i of `x` (the embedder contract: texts -> float32 [n, d])."""

    def __init__(self, texts, x):
        self.position, self.x = {t: i for i, t in enumerate(texts)}, x

    def encode(self, texts, max_tokens=None):
        return self.x[[self.position[t] for t in texts]]


def assert_answers(index, texts, k, *args):
    distances, rows = index.search_texts(texts, k, *args)
    width = min(k, len(index))
    assert distances.shape == rows.shape == (len(texts), width) and rows.dtype == np.int64
    assert distances.dtype in (np.float32, np.float64) and (np.diff(distances, axis=1) >= 0).all()  # nearest first
    assert set(rows[rows >= 0].tolist()) <= set(np.asarray(index.rows).tolist())  # indexed train chunks only
    return distances, rows


def test_every_index_kind_is_a_retriever(tiny_params, tmp_path):
    from ttt_core.index import NeighborIndex
    from ttt_core.retrievers import BM25Index, DenseRetriever, RerankIndex
    from ttt_core.shards import ShardedIndex, build_shards
    from ttt_core.study import prepare

    # the re-ranker of a BM25 and a dense stage: four kinds from one tiny study
    study = prepare(StudyConfig.from_params(**tiny_params, retriever="rerank", rerank_from="bm25+tiny-bert",
                                            rerank_candidates=6), progress=False)
    rerank, stages = study.index, study.index.stages
    bm25, dense = stages["bm25"], stages["tiny-bert"]
    assert (type(rerank), type(bm25), type(dense), type(dense.index)) == (
        RerankIndex, BM25Index, DenseRetriever, NeighborIndex)
    texts = [d["text"] for d in study.test_documents()]
    for kind in (rerank, bm25, dense):
        assert isinstance(kind, Retriever)
        assert_answers(kind, texts, 5)
    assert isinstance(dense.index, Retriever)
    want = assert_answers(dense.index, texts, 5, study.embedder, study.config.embed_max_tokens)
    np.testing.assert_array_equal(dense.search_texts(texts, 5)[1], want[1])  # the same search, embedder bound
    with pytest.raises(ValueError, match="pass embedder"):
        dense.index.search_texts(texts, 5)

    # a sharded index answers as one flat index over the same vectors
    x = vectors(300, dim=16)
    build_shards(tmp_path / "shards", shard_plan(x, [120]), dim=16, progress=False)
    sharded = ShardedIndex(tmp_path / "shards")
    flat = NeighborIndex.from_embeddings(x, np.arange(len(x)), {"metric": "l2"})
    queries = [f"q{i}" for i in range(4)]
    embedder = Table(queries, vectors(4, dim=16, seed=1))
    assert isinstance(sharded, Retriever) and isinstance(flat, Retriever)
    got, want = assert_answers(sharded, queries, 7, embedder), assert_answers(flat, queries, 7, embedder)
    np.testing.assert_array_equal(got[1], want[1])
    # Ray's sharded index (the Ray tests check an instance): the same text search and members, no Ray needed here
    from ttt_core.scale import RayShardedIndex

    assert issubclass(RayShardedIndex, DenseSearch)
    assert all(hasattr(RayShardedIndex, name) for name in ("rows", "meta", "__len__", "search", "search_texts"))
