import json

import pytest

import ttt_core.study as study_module
from ttt_core.config import StudyConfig
from ttt_core.results import ResultsStore, cut_row, long_frame
from ttt_core.study import failed_documents, failures_path, prepare, run_ttt


def test_store_appends_resumes_and_drops_a_row_cut_by_a_kill(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    store.append({"doc_id": "a", "x": 1})
    store.append({"doc_id": "a", "x": 2})  # no duplicates
    store.append({"doc_id": "b", "x": 3})
    with open(path, "a") as f:
        f.write('{"doc_id": "c", "x"')  # killed mid-write
    again = ResultsStore(path)
    assert list(again.rows) == ["a", "b"] and again.rows["a"]["x"] == 1
    again.append({"doc_id": "c", "x": 4})
    assert [json.loads(line)["doc_id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_killed_run_resumes_without_lost_or_duplicated_documents(tiny_params, monkeypatch):
    config = StudyConfig.from_params(**{**tiny_params, "docs_per_domain": 2})
    study = prepare(config, progress=False)
    real = study_module.test_time_train
    calls = []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(args[1]["id"])
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "test_time_train", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_ttt(study, progress=False)
    assert len(ResultsStore(study.results_path)) == 2

    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(a[1]["id"]) or real(*a, **k))
    rows = run_ttt(study, progress=False)
    assert len(rows) == 6 and len(set(calls)) == len(calls) == 6  # each document trained exactly once
    assert len(study.results_path.read_text().splitlines()) == 6
    frame = long_frame(rows)
    assert set(frame["k"]) == set(config.ks) and len(frame) == 6 * len(config.ks)


def test_a_failing_document_is_recorded_retried_once_and_never_dropped_silently(tiny_params, monkeypatch):
    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    real, attempts = study_module.test_time_train, []
    victim = study.test_documents()[1]["id"]

    def fails(times):
        def train(*args, **kwargs):
            if args[1]["id"] == victim and attempts.count(victim) < times:
                attempts.append(victim)
                raise RuntimeError("retrieval shard unreadable\nsecond line")
            return real(*args, **kwargs)
        return train

    monkeypatch.setattr(study_module, "test_time_train", fails(1))  # fails once: the retry finishes it
    rows = run_ttt(study, progress=False)
    assert len(rows) == 3 and failed_documents(study) == {}
    records = [json.loads(line) for line in failures_path(study).read_text().splitlines()]
    assert records == [{**records[0], "doc_id": victim, "attempt": 1, "reason": "RuntimeError: retrieval shard unreadable"}]

    other = prepare(StudyConfig.from_params(**{**tiny_params, "learning_rate": 3e-3}), progress=False)  # a new run
    attempts.clear()
    monkeypatch.setattr(study_module, "test_time_train", fails(99))  # fails every time
    with pytest.raises(RuntimeError, match=f"1 of 3 documents failed 2 times.*{victim}.*failures.jsonl"):
        run_ttt(other, progress=False)
    assert len(ResultsStore(other.results_path)) == 2 and attempts == [victim, victim]  # the others are kept
    assert [r["attempt"] for r in failed_documents(other)[victim]] == [1, 2]
    with pytest.warns(UserWarning, match="1 of 3 documents failed"):
        rows = run_ttt(other, progress=False, allow_failures=True)
    assert [r["doc_id"] for r in rows] == [d["id"] for d in other.test_documents() if d["id"] != victim]

    # Three failures in a row are the code's, not a document's: the run stops at once, the cause chained.
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug")))
    broken = prepare(StudyConfig.from_params(**{**tiny_params, "learning_rate": 4e-3, "docs_per_domain": 2}),
                     progress=False)
    with pytest.raises(RuntimeError, match="3 in a row") as stopped:
        run_ttt(broken, progress=False)
    assert isinstance(stopped.value.__cause__, ValueError) and len(failed_documents(broken)) == 3
    # With carried Adam moments a retry out of order would change the result: the first failure stops the run.
    carried = prepare(StudyConfig.from_params(**{**tiny_params, "learning_rate": 5e-3, "reset_optimizer": False}),
                      progress=False)
    with pytest.raises(RuntimeError, match="reset_optimizer=False"):
        run_ttt(carried, progress=False)
    assert sum(len(v) for v in failed_documents(carried).values()) == 1


def test_more_documents_reuse_the_finished_ones(tiny_params, monkeypatch):
    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    run_ttt(study, progress=False)
    calls = []
    real = study_module.test_time_train
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    bigger = prepare(StudyConfig.from_params(**{**tiny_params, "docs_per_domain": 2}), progress=False)
    assert bigger.results_path == study.results_path
    assert len(run_ttt(bigger, progress=False)) == 6 and len(calls) == 3


def test_a_smaller_k_reuses_the_rows_of_a_larger_k_run(tiny_params, monkeypatch):
    big = prepare(StudyConfig.from_params(**{**tiny_params, "k": 5}), progress=False)
    big_rows = run_ttt(big, progress=False)
    calls = []
    real = study_module.test_time_train
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    small = prepare(StudyConfig.from_params(**{**tiny_params, "k": 3}), progress=False)
    rows = run_ttt(small, progress=False)
    assert not calls and small.results_path != big.results_path
    assert [e["k"] for e in rows[0]["evals"]] == [0, 1, 2, 3] and len(rows[0]["train_loss"]) == 3
    assert rows[0]["evals"] == big_rows[0]["evals"][:4]
    # ... and they are what a fresh k=3 run computes (nearest-first training is a prefix of the longer run).
    fresh = prepare(StudyConfig.from_params(**{**tiny_params, "k": 3, "work_dir": tiny_params["work_dir"] + "2"}),
                    progress=False)
    again = run_ttt(fresh, progress=False)
    assert [e["loglik"] for e in again[0]["evals"]] == pytest.approx([e["loglik"] for e in rows[0]["evals"]],
                                                                      rel=1e-6)


def test_rows_trained_with_carried_adam_moments_are_never_cut_for_a_smaller_k(tiny_params, monkeypatch):
    """With reset_optimizer=False the moments entering a document depend on how many steps came before, so
    a row cut from a k=5 run is not what a k=3 run computes: it must be recomputed, not reused."""
    official = {**tiny_params, "reset_optimizer": False, "docs_per_domain": 2}
    big_rows = run_ttt(prepare(StudyConfig.from_params(**{**official, "k": 5}), progress=False), progress=False)
    calls = []
    real = study_module.test_time_train
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = run_ttt(prepare(StudyConfig.from_params(**{**official, "k": 3}), progress=False), progress=False)
    assert len(calls) == len(rows) == 6  # every document trained again
    cut = [cut_row(r, 3) for r in big_rows]
    assert cut[0]["evals"] == rows[0]["evals"]  # the first document starts from a fresh optimizer in both runs
    assert any(c["evals"] != r["evals"] for c, r in zip(cut[1:], rows[1:]))  # later ones do not


@pytest.mark.parametrize("selection", ["sift", "hullft"])
def test_a_selection_run_is_never_cut_from_a_run_with_more_steps(tmp_path, selection):
    """HullFT's multiset of n steps and SIFT's pool of 4 k candidates change with k: a cut row would be wrong."""
    from ttt_core.results import reusable_stores

    def inputs(k):
        return StudyConfig(k=k, selection=selection).result_inputs("fp")
    (tmp_path / "big.config.json").write_text(json.dumps(inputs(10)))
    assert reusable_stores(tmp_path, inputs(5)) == []
    nearest = StudyConfig(k=10).result_inputs("fp")
    (tmp_path / "near.config.json").write_text(json.dumps(nearest))
    assert len(reusable_stores(tmp_path, StudyConfig(k=5).result_inputs("fp"))) == 1


def test_a_row_cut_from_a_larger_k_is_reused_only_with_the_neighbours_this_run_retrieves(tiny_params, monkeypatch):
    """A k=1 run answered from a k=3 run's rows trained on whichever tied neighbour the larger search put first:
    a cut row stands for this run only when its first k neighbours are the ones this run retrieves."""
    big = prepare(StudyConfig.from_params(**{**tiny_params, "k": 5}), progress=False)
    big_rows = run_ttt(big, progress=False)
    # The larger run's first document retrieved other neighbours (another tie order, another index build).
    changed = dict(big_rows[0], neighbors=list(reversed(big_rows[0]["neighbors"])))
    big.results_path.write_text("".join(json.dumps(r) + "\n" for r in [changed, *big_rows[1:]]))
    calls = []
    real = study_module.test_time_train
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(a[1]["id"]) or real(*a, **k))
    small = run_ttt(prepare(StudyConfig.from_params(**{**tiny_params, "k": 3}), progress=False), progress=False)
    assert calls == [big_rows[0]["doc_id"]]  # retrained; the others are cut from the larger run
    assert small[0]["neighbors"] == big_rows[0]["neighbors"][:3]
    assert [r["evals"] for r in small[1:]] == [[e for e in r["evals"] if e["k"] <= 3] for r in big_rows[1:]]
# ------------------------------------------------------------------------------------------ run keys by content
def never_load(*args, **kwargs):
    raise AssertionError("keying a run must not load the language model")


def test_a_run_key_names_the_chunks_the_index_holds(tiny_params, monkeypatch):
    """The same configuration over an index that holds other chunks (a cached index rebuilt by other
    decontamination code, a row left out) is another run: its rows are never served from the first one's file."""
    import dataclasses

    import numpy as np

    monkeypatch.setattr(study_module, "load_language_model", never_load)
    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    vectors = study.index.index.reconstruct_n(0, len(study.index))
    keep = np.ones(len(study.index), dtype=bool)
    keep[0] = False
    fewer = dataclasses.replace(study, index=study.index.subset(keep, vectors))
    assert fewer.results_path != study.results_path
    # the same number of chunks, one of them another: still another run
    swapped = dataclasses.replace(study.index, rows=np.where(study.index.rows == study.index.rows[0],
                                                             study.corpus.rows("test")[0], study.index.rows))
    assert dataclasses.replace(study, index=swapped).results_path != study.results_path
    assert dataclasses.replace(study).results_path == study.results_path  # the same index: the same run


@pytest.mark.parametrize("kind", ["model", "embedder"])
def test_a_run_key_names_the_weights_of_a_local_model_folder_not_its_name(tiny_params, tmp_path, monkeypatch, kind):
    """New weights written into the same folder (a fine-tune saved over the last one) make another run."""
    import time

    from ttt_core.index import index_folder
    from ttt_core.models import tiny_model

    folder = tmp_path / f"local-{kind}"

    def save(seed):
        model, tokenizer = tiny_model("tiny-llama" if kind == "model" else "tiny-bert", seed)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    monkeypatch.setattr(study_module, "load_language_model", never_load)
    save(0)
    config = StudyConfig.from_params(**{**tiny_params, kind: str(folder)})
    first = prepare(config, progress=False).results_path
    assert prepare(config, progress=False).results_path == first  # nothing changed: the same run
    first_index = index_folder(config, prepare(config, progress=False).corpus)
    save(1)
    assert prepare(config, progress=False).results_path != first
    if kind == "embedder":  # nor are the vectors the old weights embedded served as the new weights' index
        assert index_folder(config, prepare(config, progress=False).corpus) != first_index
    time.sleep(0.01)
    save(0)  # the first weights again: the first run again
    assert prepare(config, progress=False).results_path == first


@pytest.mark.parametrize("module", ["torch", "transformers", "tokenizers", "faiss", "numpy"])
def test_a_run_key_names_the_library_versions(tiny_params, monkeypatch, module):
    import dataclasses
    import importlib

    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    before = study.results_path
    monkeypatch.setattr(importlib.import_module(module), "__version__", "0.0.0-another", raising=False)
    assert dataclasses.replace(study).results_path != before


def test_a_baseline_results_file_names_the_baselines_code_version(tiny_params, monkeypatch):
    from ttt_core import baselines

    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    before = baselines.baselines_key(study)
    monkeypatch.setattr(baselines, "BASELINES_VERSION", getattr(baselines, "BASELINES_VERSION", 1) + 1,
                        raising=False)
    assert baselines.baselines_key(study) != before


def test_a_run_key_is_the_same_in_another_process(tiny_params):
    import subprocess
    import sys

    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    code = ("import json, sys; from ttt_core.config import StudyConfig; from ttt_core.study import prepare; "
            "print(prepare(StudyConfig.from_params(**json.loads(sys.argv[1])), progress=False).results_path.name)")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(tiny_params)], capture_output=True, text=True,
                           check=True)
    assert other.stdout.strip().splitlines()[-1] == study.results_path.name


def test_rows_computed_under_other_library_versions_are_never_reused(tiny_params, monkeypatch):
    import transformers

    real_version = transformers.__version__
    monkeypatch.setattr(transformers, "__version__", "0.0.0-another")
    run_ttt(prepare(StudyConfig.from_params(**{**tiny_params, "k": 5}), progress=False), progress=False)
    monkeypatch.setattr(transformers, "__version__", real_version)
    calls = []
    real = study_module.test_time_train
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = run_ttt(prepare(StudyConfig.from_params(**{**tiny_params, "k": 3}), progress=False), progress=False)
    assert len(calls) == len(rows) == 3  # trained again, not cut from the k=5 rows of the other transformers


def test_a_sharded_index_is_keyed_by_the_rows_of_its_shards(tmp_path):
    """The Pile layout's index: a shard that holds other rows is another index (each shard's rows file hashed
    once, then read from the cache beside the shards)."""
    import numpy as np

    from ttt_core.index import indexed_identity
    from ttt_core.shards import ShardedIndex, build_shards

    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)

    def build(folder, rows):
        plan = [("00", lambda: iter([(rows[:30], x[:30])])), ("01", lambda: iter([(rows[30:], x[30:])]))]
        build_shards(folder, plan, dim=8, progress=False)
        return indexed_identity(ShardedIndex(folder))

    first = build(tmp_path / "a", np.arange(60))
    assert build(tmp_path / "b", np.arange(60)) == first  # the same rows elsewhere: the same index
    assert build(tmp_path / "c", np.arange(60)[::-1].copy()) != first
    assert (tmp_path / "a" / "sha256.json").exists()


def test_a_file_hash_is_reused_only_while_the_file_is_unchanged(tmp_path, monkeypatch):
    import os

    from ttt_core import models

    hashed = []
    real = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p: hashed.append(p) or real(p))
    weights, cache = tmp_path / "model.safetensors", tmp_path / "cache.json"
    weights.write_bytes(b"a" * 100)
    os.utime(weights, ns=(weights.stat().st_mtime_ns - 10**10,) * 2)  # written well before it is hashed
    first = models.cached_sha256(weights, cache)
    assert models.cached_sha256(weights, cache) == first and len(hashed) == 1  # read from the cache
    weights.write_bytes(b"b" * 100)  # the same size, rewritten just now: hashed again, every time until it settles
    assert models.cached_sha256(weights, cache) != first
    assert models.cached_sha256(weights, cache) != first and len(hashed) == 3


def test_a_hub_model_is_keyed_by_its_snapshot_commit(tmp_path, monkeypatch):
    import huggingface_hub

    from ttt_core.models import weights_identity

    snapshots = {"org/lm": str(tmp_path / "models--org--lm" / "snapshots" / "0123abcd" / "config.json")}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: snapshots.get(repo))
    assert weights_identity("org/lm", "lm", tmp_path) == {"hub": "org/lm", "commit": "0123abcd"}
    with pytest.raises(ValueError, match="'org/other' has no snapshot in the local Hugging Face cache"):
        weights_identity("org/other", "lm", tmp_path)


def test_rows_are_shared_across_indexes_only_with_the_same_weights_and_libraries(tmp_path):
    """same_neighbor_stores aligns what the index holds (its fingerprint and the parameters that choose it), never
    the weights or the library versions; reusable_stores aligns only k."""
    from ttt_core.results import reusable_stores, same_neighbor_stores

    content = {"index_fingerprint": "i1", "lm_weights": {"sha256": "w1"}, "embedder_weights": {"sha256": "e1"},
               "libraries": {"torch": "2"}}
    inputs = StudyConfig(k=5).result_inputs("fp", content)

    def donor(name, k=10, **changes):
        (tmp_path / f"{name}.config.json").write_text(json.dumps(StudyConfig(k=k).result_inputs(
            "fp", {**content, **changes})))

    donor("other-index", index_fingerprint="i2")
    donor("other-lm", index_fingerprint="i2", lm_weights={"sha256": "w2"})
    donor("other-embedder", index_fingerprint="i2", embedder_weights={"sha256": "e2"})
    donor("other-torch", index_fingerprint="i2", libraries={"torch": "3"})
    assert [s.path.stem for s in same_neighbor_stores(tmp_path, inputs)] == ["other-index"]
    assert reusable_stores(tmp_path, inputs) == []
    donor("larger-k")
    donor("larger-k-other-torch", libraries={"torch": "3"})
    assert [s.path.stem for s in reusable_stores(tmp_path, inputs)] == ["larger-k"]


def test_a_file_hash_cache_written_by_many_threads_at_once_loses_no_writer(tmp_path):
    """A Ray driver keys a run in two threads of one process at once: each writer needs its own temporary file,
    or one thread's rename finds the other's file already moved (FileNotFoundError)."""
    import threading

    from ttt_core.models import cached_sha256

    files = []
    for i in range(8):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes([i]) * 1000)
    errors, barrier = [], threading.Barrier(8)

    def hash_many(path):
        barrier.wait()
        try:
            for _ in range(20):
                cached_sha256(path, tmp_path / "sha256.json")
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=hash_many, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert not list(tmp_path.glob("*.tmp"))
