"""Retrievers a CPU can afford (issue 22): the static embedder, BM25 and the two-stage re-ranker behind the one
`search.Retriever` interface, their caches, run keys and bad parameters."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

from ttt_core.config import StudyConfig

ROOT = Path(__file__).resolve().parents[1]


def test_installing_the_retrievers_keeps_the_pinned_transformers_and_model2vec_distill_imports():
    """model2vec's `distill` extra pins transformers<5.4: it is installed without the extra (requirements file,
    --no-deps), so the study's pin must still be what runs, and distillation must still import."""
    pinned = re.search(r'"transformers==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert importlib.metadata.version("transformers") == pinned
    from model2vec.distill import distill_from_model  # noqa: F401
    import bm25s  # noqa: F401

    listed = (ROOT / "requirements-retrieval.txt").read_text()
    for dist in ("model2vec", "bm25s", "skeletoken"):
        assert f"{dist}=={importlib.metadata.version(dist)}" in listed


@pytest.fixture(scope="module")
def tiny_static(tmp_path_factory):
    """A static table distilled from the tiny random BERT (not the packaged MiniLM)."""
    from ttt_core.models import tiny_model
    from ttt_core.static import distill_folder

    folder = tmp_path_factory.mktemp("static") / "tiny-static"
    model, tok = tiny_model("tiny-bert")
    distill_folder(model, tok, folder, {"name": "tiny-bert"})
    return folder


def test_a_distilled_record_is_the_same_wherever_the_teacher_lies(tiny_static, tmp_path):
    """model2vec writes the teacher's path into config.json; two checkouts must still give one record (run key)."""
    import json

    from ttt_core.models import tiny_model
    from ttt_core.static import RECORD, distill_folder

    model, tok = tiny_model("tiny-bert")
    tok.name_or_path = model.name_or_path = str(tmp_path / "elsewhere" / "teacher")
    distill_folder(model, tok, tmp_path / "tiny-static", {"name": "tiny-bert"})
    assert json.loads((tmp_path / "tiny-static" / "config.json").read_text())["tokenizer_name"] == "tiny-bert"
    assert (tmp_path / "tiny-static" / RECORD).read_text() == (tiny_static / RECORD).read_text()


def test_static_embedder_keeps_the_embedder_contract_and_refuses_changed_files(tiny_static):
    from ttt_core.static import load_static

    embedder = load_static(tiny_static, "tiny-static", 256)
    vectors = embedder.encode(["hello world", "a b c", ""], None)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1, atol=1e-5)
    # max_tokens cuts the text as the transformer embedders do: the first tokens only
    assert np.allclose(embedder.encode(["hello world"], 1), embedder.encode(["hello there"], 1))
    with pytest.raises(ValueError, match="embed_max_tokens"):
        embedder.max_tokens(0)
    (tiny_static / "model.safetensors").write_bytes((tiny_static / "model.safetensors").read_bytes() + b"x")
    with pytest.raises(RuntimeError, match="model.safetensors"):
        load_static(tiny_static, "tiny-static", 256)


def test_bm25_ties_are_broken_by_corpus_row_so_k_is_a_prefix_of_a_larger_k():
    from ttt_core.retrievers import BM25Index

    texts = ["alpha beta", "gamma delta", "alpha beta", "alpha beta", "zeta eta", "alpha beta"]
    rows = np.array([50, 40, 30, 20, 10, 5])  # not sorted: ties must come by row, not by position
    index = BM25Index.build(texts, rows, {})
    d2, r2 = index.search_texts(["alpha beta"], 2)
    d5, r5 = index.search_texts(["alpha beta"], 5)
    assert r5[0][:4].tolist() == [5, 20, 30, 50] and r2[0].tolist() == r5[0][:2].tolist()
    assert (d5[0][:4] == d5[0][0]).all() and d5[0][0] < 0  # distance = minus the BM25 score
    assert index.search_texts(["nothing matches"], 3)[1][0].tolist() == [-1, -1, -1]  # no shared term: no match


def test_bm25_indexes_the_same_rows_as_the_dense_index_and_is_cached(tiny_params):
    from ttt_core.corpus import build_corpus
    from ttt_core.index import indexed_mask
    from ttt_core.retrievers import build_bm25

    config = StudyConfig.from_params(**tiny_params, retriever="bm25", index_fraction=0.5)
    corpus = build_corpus(config, progress=False)
    index = build_bm25(config, corpus)
    assert np.array_equal(index.rows, corpus.rows("train")[indexed_mask(config, corpus)])
    assert index.meta["chunks_per_second"] > 0
    again = build_bm25(config, corpus)
    assert again.meta["index_seconds"] == index.meta["index_seconds"]  # read back, not rebuilt


def test_rerank_embeds_each_candidate_once_across_runs_and_larger_k(tiny_params, monkeypatch):
    from ttt_core.study import prepare

    # BM25 alone as first stage: no dense index of the re-ranker's embedder exists to take vectors from
    config = StudyConfig.from_params(**tiny_params, retriever="rerank", rerank_from="bm25", rerank_candidates=5)
    study = prepare(config, progress=False)
    doc = study.test_documents()[0]
    first = study.training_texts(doc)
    assert study.index.cache.embedded > 0
    distances = [n.distance for n in first]
    assert distances == sorted(distances)
    # a second run (a fresh study: the cache is read from disk) and a larger k embed no chunk again
    again = prepare(dataclasses.replace(config, k=5), progress=False)
    calls = []
    original = again.index.cache.embedder.encode
    monkeypatch.setattr(again.index.cache.embedder, "encode",
                        lambda texts, *a, **kw: calls.append(len(texts)) or original(texts, *a, **kw))
    larger = again.training_texts(doc)
    assert [n.row for n in larger][:3] == [n.row for n in first]
    # only the query is embedded
    assert again.index.cache.embedded == 0 and calls and set(calls) == {1}
    with pytest.raises(ValueError, match="rerank_candidates"):
        again.index.search_texts([doc["text"]], 6)


def test_run_keys_differ_by_retriever_and_the_dense_default_key_is_unchanged(tiny_params):
    from ttt_core.study import prepare

    assert StudyConfig().run_key("fp") == "47d376041e0b50c0"
    assert StudyConfig(rerank_candidates=7).run_key("fp") == "47d376041e0b50c0"  # unused by a dense run
    keys = {r: prepare(StudyConfig.from_params(**tiny_params, retriever=r, rerank_from="bm25+tiny-bert"),
                       progress=False).run_key for r in ("dense", "bm25", "rerank")}
    assert len(set(keys.values())) == 3
    other = prepare(StudyConfig.from_params(**tiny_params, retriever="rerank", rerank_from="bm25"), progress=False)
    assert other.run_key != keys["rerank"]


@pytest.mark.parametrize("params, name", [
    ({"retriever": "bm52"}, "retriever"),
    ({"retriever": "rerank", "rerank_from": ""}, "rerank_from"),
    ({"retriever": "rerank", "rerank_from": "bm25+"}, "rerank_from"),
    ({"retriever": "rerank", "rerank_candidates": 2, "k": 3}, "rerank_candidates"),
    ({"retriever": "bm25", "selection": "sift"}, "selection"),
    ({"retriever": "bm25", "leaky_index": True}, "leaky_index"),
])
def test_bad_retriever_parameters_are_refused_by_name(params, name):
    with pytest.raises(ValueError, match=rf"invalid {name}="):
        StudyConfig(**params).validate()


def test_an_unknown_first_stage_is_refused_before_any_work(tiny_params):
    from ttt_core.study import check

    with pytest.raises(ValueError, match=r"invalid rerank_from=.*'no-such-embedder'"):
        check(StudyConfig.from_params(**tiny_params, retriever="rerank", rerank_from="bm25+no-such-embedder"))


def test_random_controls_and_the_k_supply_check_work_for_bm25(tiny_params):
    from ttt_core.study import check_neighbor_supply, prepare

    study = prepare(StudyConfig.from_params(**tiny_params, retriever="bm25", neighbors="random-any"), progress=False)
    docs = study.test_documents()
    picked = study.training_texts(docs[0])
    assert len(picked) == 3 and set(n.row for n in picked) <= set(study.index.rows.tolist())
    with pytest.raises(ValueError, match="k=1000"):
        check_neighbor_supply(dataclasses.replace(study, config=dataclasses.replace(study.config, k=1000)), docs)


def test_retrieval_agreement_counts_recall_and_same_domain_share():
    from ttt_core.retrievers import retrieval_agreement

    found = np.array([[1, 2], [3, -1]])
    exact = np.array([[2, 9], [3, 4]])
    out = retrieval_agreement(found, exact, ["a", "b"], {1: "a", 2: "b", 3: "b", 4: "b", 9: "a"})
    assert out["recall@k"] == 0.5 and out["same_domain"] == pytest.approx(2 / 3)
    assert out["exact_same_domain"] == 0.75


@pytest.mark.smoke
def test_minilm_static_distils_from_the_packaged_minilm(tmp_path):
    from ttt_core.models import load_embedder, weights_identity

    embedder = load_embedder("minilm-static", tmp_path)
    vectors = embedder.encode(["The cat sat on the mat.", "A feline rested on a rug.", "def f(x): return x"])
    assert vectors.shape == (3, 256) and vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    identity = weights_identity("minilm-static", "embedder", tmp_path)
    assert identity["teacher"]["name"] == "minilm" and identity["model2vec"] == "0.10.0"


def test_every_index_records_its_indexing_throughput(tiny_params):
    from ttt_core.study import prepare

    for retriever in ("dense", "bm25"):
        study = prepare(StudyConfig.from_params(**tiny_params, retriever=retriever), progress=False)
        assert study.index.meta["chunks_per_second"] > 0, retriever


def test_rerank_reuses_the_vectors_of_a_dense_index_of_its_own_embedder(tiny_params):
    """A chapter builds the exact index of the re-ranker's embedder on a subset, then re-ranks over the same
    subset: the candidates' vectors are already on disk, so re-ranking embeds none of them again."""
    from ttt_core.study import prepare

    dense = prepare(StudyConfig.from_params(**tiny_params, index_fraction=0.5), progress=False)
    rerank = prepare(StudyConfig.from_params(**tiny_params, index_fraction=0.5, retriever="rerank",
                                             rerank_from="bm25", rerank_candidates=1000), progress=False)
    doc = rerank.test_documents()[0]
    neighbours = rerank.training_texts(doc)
    assert rerank.index.cache.embedded == 0
    # every indexed chunk is a candidate here, so re-ranking gives the exact order
    assert [n.row for n in neighbours] == [n.row for n in dense.training_texts(doc)]


def test_a_rerank_vector_cache_cut_mid_save_never_serves_another_rows_vectors(tmp_path):
    """The cache is one file written whole: a kill while saving leaves the previous file, never rows that point
    past (or at the wrong) vectors."""
    from ttt_core.retrievers import EmbeddingCache

    class Corpus:
        def texts(self, rows):
            return [f"text {int(r)}" for r in rows]

    class Embedder:
        dim = 2

        def encode(self, texts, max_tokens=None):
            return np.array([[float(t.split()[1]), 0.0] for t in texts], dtype=np.float32)

    cache = EmbeddingCache(tmp_path / "c", Embedder(), 8, Corpus())
    cache.get(np.array([3, 4]))
    saved = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(saved) == 1, saved  # one file: rows and vectors cannot be saved apart
    again = EmbeddingCache(tmp_path / "c", Embedder(), 8, Corpus())
    again.adopt(np.array([7, 8]), np.array([[7.0, 0], [8.0, 0]], dtype=np.float32))
    assert again.get(np.array([3, 4, 7]))[:, 0].tolist() == [3.0, 4.0, 7.0]


def test_a_rerank_run_key_names_its_dense_first_stages_weights(tiny_params, monkeypatch):
    """Another table under the first stage's name (a static embedder distilled again) is another run."""
    import ttt_core.models as models
    from ttt_core.study import prepare

    config = StudyConfig.from_params(**tiny_params, retriever="rerank", rerank_from="bm25+tiny-bert-large")
    key = prepare(config, progress=False).run_key
    real = models.weights_identity
    monkeypatch.setattr(models, "weights_identity", lambda name, kind, work: (
        {"sha256": "another"} if name == "tiny-bert-large" else real(name, kind, work)))
    assert prepare(config, progress=False).run_key != key


def test_a_bm25_run_key_does_not_depend_on_an_embedder_it_never_loads(tiny_params, monkeypatch):
    import ttt_core.models as models
    import ttt_core.study as study_module
    from ttt_core.study import prepare

    config = StudyConfig.from_params(**tiny_params, retriever="bm25")
    key = prepare(config, progress=False).run_key
    real = models.weights_identity
    fake = lambda name, kind, work: {"sha256": "another"} if kind == "embedder" else real(name, kind, work)  # noqa: E731
    monkeypatch.setattr(models, "weights_identity", fake)
    monkeypatch.setattr(study_module, "weights_identity", fake)
    assert prepare(config, progress=False).run_key == key


def test_bm25_never_returns_a_chunk_that_shares_no_term_with_the_query():
    """A zero score is no match: such chunks would come in corpus-row order, the first rows of one domain."""
    from ttt_core.retrievers import BM25Index

    texts = ["alpha beta gamma", "beta delta", "epsilon zeta", "这是一个测试文本", "测试文本没有空格"]
    index = BM25Index.build(texts, np.arange(len(texts)), {})
    _, rows = index.search_texts(["🙂🙂 !!!"], 3)
    assert (rows == -1).all()
    _, rows = index.search_texts(["beta"], 3)
    assert rows[0].tolist() == [1, 0, -1]
    # an unspaced script is matched by its character bigrams (as Lucene's CJK analyzer), not as one long token
    _, rows = index.search_texts(["一个测试"], 2)
    assert set(rows[0].tolist()) == {3, 4}


def test_a_bm25_run_that_finds_fewer_than_k_chunks_says_why(tiny_params):
    from ttt_core.retrieve import retrieve
    from ttt_core.study import prepare

    study = prepare(StudyConfig.from_params(**tiny_params, retriever="bm25"), progress=False)
    with pytest.raises(ValueError, match="share a term with the query"):
        retrieve("🙂 🙂", 2, None, study.index, study.corpus)


def test_duplicate_first_stages_are_refused():
    with pytest.raises(ValueError, match="rerank_from"):
        StudyConfig(retriever="rerank", rerank_from="bm25+bm25").validate()


def test_a_bm25_run_key_and_checks_ignore_the_embedder_settings_it_never_uses(tiny_params):
    from ttt_core.study import prepare

    keys = {prepare(StudyConfig.from_params(**{**tiny_params, "retriever": "bm25", **changes}), progress=False).run_key
            for changes in ({}, {"embedder": "tiny-bert-large"}, {"embed_max_tokens": 5},
                            {"embedder": "no-such-embedder"})}
    assert len(keys) == 1


def test_a_text_embedded_as_the_zero_vector_gets_no_neighbour_not_the_first_rows():
    """A static table embeds a text with no token of its vocabulary as zeros: every chunk ties, and rows would
    come in corpus order (the first domain's). It gets none, as BM25 gives a query that shares no term."""
    from ttt_core.index import NeighborIndex
    from ttt_core.retrieve import remedy
    from ttt_core.retrievers import DenseRetriever

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = NeighborIndex.from_embeddings(vectors, np.arange(10, 16), {"metric": "l2", "embedder": "minilm-static"})

    class Fixed:  # the embedder contract: texts -> float32 [n, dim]
        def encode(self, texts, max_tokens=None):
            return np.stack([np.zeros(4, np.float32) if t == "🙂" else vectors[2] for t in texts])

    distances, rows = DenseRetriever(index, Fixed()).search_texts(["🙂", "words"], 3)
    assert rows[0].tolist() == [-1, -1, -1] and np.isinf(distances[0]).all()
    assert rows[1][0] == 12 and distances[1][0] < 1e-6
    assert "static embedder (minilm-static)" in remedy(index, 3)
    assert "smaller k" in remedy(index, 7)  # too few chunks: that, not the query, is the cause
    from ttt_core.retrieve import selected_neighbors

    with pytest.raises(ValueError, match="found only 0.*static embedder"):  # SIFT's pool: no tied first rows
        selected_neighbors("🙂", 1, "sift", 4, Fixed(), index, corpus=None)
