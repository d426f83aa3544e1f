"""Ray scale-out on a local Ray instance (num_cpus=2): the same index, neighbours and rows as one process, and
failures recorded, retried once and reported. Runs where the `scale` extra is installed (`make test` puts it
on the path for this folder)."""
import json
import threading
import time

import faiss
import numpy as np
import pytest
import ray
import zstandard

from conftest import write_pile_layout
from ttt_core import scale
from ttt_core.config import StudyConfig
from ttt_core.corpus import build_corpus
from ttt_core.models import load_embedder
from ttt_core.search import Retriever
from ttt_core.study import Study, failed_documents, failures_path, prepare, run_ttt


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def layout_params(root, **changes):
    return {**dict(corpus=str(root / "pile"), chunk_bytes=None, decontam_threshold=None, k=2, model="tiny-gpt2",
                   embedder="tiny-bert", learning_rate=1e-3, device="cpu", work_dir=str(root / "work"),
                   domains=("github", "pile-cc", "arxiv"), docs_per_domain=3), **changes}


def comparable(row):
    """A result row without its wall times (the only field that differs from run to run)."""
    return {k: v for k, v in row.items() if k != "train_seconds"}


def assert_same_rows(got, want):
    assert [r["doc_id"] for r in got] == [r["doc_id"] for r in want]
    for a, b in zip(got, want):
        assert a["neighbors"] == b["neighbors"] and a["train_steps"] == b["train_steps"]
        for ea, eb in zip(a["evals"], b["evals"]):  # workers run torch on one thread: reduction order may differ
            assert ea["k"] == eb["k"] and ea["loglik"] == pytest.approx(eb["loglik"], rel=1e-6)


def test_ray_built_shards_and_ray_held_shards_answer_as_one_flat_index(tmp_path):
    write_pile_layout(tmp_path / "pile", shards=3, docs_per_task=4)
    local = prepare(StudyConfig.from_params(**layout_params(tmp_path)), progress=False)  # built in this process
    config = StudyConfig.from_params(**layout_params(tmp_path, work_dir=str(tmp_path / "work-ray")))
    corpus = build_corpus(config, progress=False)
    embedder = load_embedder(config.embedder, config.work_path, config.device, config.seed)
    built = scale.build_index_ray(Study(config, corpus, embedder, None), workers=2, batch_size=8, progress=False)
    assert built.shards == local.index.shards == ["00", "01", "02"]
    for name in built.shards:  # the same vectors for the same rows, shard by shard
        a = faiss.read_index(str(built.folder / f"{name}.faiss"))
        b = faiss.read_index(str(local.index.folder / f"{name}.faiss"))
        np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), rtol=1e-5, atol=1e-6)
        assert np.array_equal(np.load(built.folder / f"{name}.rows.npy"), np.load(local.index.folder / f"{name}.rows.npy"))
    held = scale.RayShardedIndex(built.folder, actors=2)
    assert isinstance(held, Retriever)  # the one retrieval interface of every index kind
    train = corpus.rows("train")
    flat = faiss.IndexFlatL2(embedder.dim)
    flat.add(np.ascontiguousarray(embedder.encode(corpus.texts(train)), dtype=np.float32))
    queries = embedder.encode(corpus.texts(corpus.rows("test")))
    assert np.array_equal(held.search(queries, 9)[1], train[flat.search(queries, 9)[1]])
    assert len(held) == len(train)


def test_a_ray_run_gives_the_rows_of_a_single_process_run(tmp_path):
    write_pile_layout(tmp_path / "pile", shards=2, docs_per_task=4)
    single = run_ttt(prepare(StudyConfig.from_params(**layout_params(tmp_path)), progress=False), progress=False)
    study = prepare(StudyConfig.from_params(**layout_params(tmp_path, work_dir=str(tmp_path / "work-ray"))),
                    progress=False)
    rows = scale.run_ttt_ray(scale.study_on_ray(study), workers=2, progress=False)
    assert len(rows) == 9 and not failures_path(study).exists()
    assert_same_rows(rows, single)


def test_killing_a_worker_mid_run_loses_no_finished_row(tmp_path):
    write_pile_layout(tmp_path / "pile", shards=2, docs_per_task=6)
    params = layout_params(tmp_path, docs_per_domain=5, k=3)
    single = run_ttt(prepare(StudyConfig.from_params(**params), progress=False), progress=False)
    study = prepare(StudyConfig.from_params(**{**params, "work_dir": str(tmp_path / "work-ray")}), progress=False)
    out = {}
    runner = threading.Thread(target=lambda: out.setdefault("rows", scale.run_ttt_ray(study, workers=2,
                                                                                        progress=False)))
    runner.start()
    deadline = time.time() + 300
    while not (study.results_path.exists() and study.results_path.read_text().count("\n") >= 2):
        assert time.time() < deadline and runner.is_alive(), "the run finished no document"
        time.sleep(0.05)
    ray.kill(ray.get_actor(scale.WORKER_NAME.format(0)))
    runner.join(timeout=300)
    lines = study.results_path.read_text().splitlines()
    assert len(lines) == len({json.loads(line)["doc_id"] for line in lines}) == 15  # none lost, none twice
    assert_same_rows(out["rows"], single)
    records = [json.loads(line) for line in failures_path(study).read_text().splitlines()]
    assert records and all(r["worker_died"] and r["attempt"] == 1 for r in records)
    assert failed_documents(study) == {}  # each was retried and finished


def test_a_failing_document_is_recorded_retried_once_and_reported(tmp_path):
    root = write_pile_layout(tmp_path / "pile", shards=1, docs_per_task=3)
    # a one-character test document: the split protocol cannot cut it into a query and a scored part
    test = zstandard.ZstdDecompressor().stream_reader(open(root / "test.jsonl.zst", "rb")).read().decode()
    test += json.dumps({"text": "x", "meta": {"pile_set_name": "Enron Emails"}}) + "\n"
    (root / "test.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(test.encode()))
    study = prepare(StudyConfig.from_params(**layout_params(tmp_path, split_query=True, docs_per_domain=4,
                                                            domains=("enron", "github"))), progress=False)
    with pytest.warns(UserWarning, match="1 of 7 documents failed 2 times"):  # enron 3 + "x", github 3
        rows = scale.run_ttt_ray(study, workers=2, progress=False)
    assert len(rows) == 6
    (doc_id, records), = failed_documents(study).items()
    assert [r["attempt"] for r in records] == [1, 2] and "at least 2 tokens" in records[0]["reason"]
    with pytest.raises(ValueError, match="invalid reset_optimizer=False for a distributed run"):
        scale.run_ttt_ray(dataclass_replace_config(study, reset_optimizer=False))


def dataclass_replace_config(study, **changes):
    import dataclasses

    return dataclasses.replace(study, config=dataclasses.replace(study.config, **changes))
