import json

import pytest
import zstandard

from ttt_core.config import StudyConfig
from ttt_core.corpus import assign_splits, build_corpus, chunk_text, load_corpus, read_pile_jsonl


def test_chunks_cover_the_text_exactly_and_cut_at_line_breaks():
    text = "\n".join(f"line {i} " + "word " * (i % 7) for i in range(300))
    chunks = chunk_text(text, 200)
    assert "".join(chunks) == text
    assert all(len(c) <= 200 + 50 for c in chunks)
    assert all(c.endswith("\n") for c in chunks[:-1])
    assert chunk_text("short", 200) == ["short"] and chunk_text(text, None) == [text]


def test_reads_jsonl_and_zstd(tmp_path, pile_file):
    records = list(read_pile_jsonl(pile_file))
    zst = tmp_path / "tiny.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(pile_file.read_bytes()))
    assert list(read_pile_jsonl(zst)) == records
    assert records[0]["meta"]["pile_set_name"] == "code"


def test_split_is_by_source_document_and_deterministic():
    sources = {"a": [f"doc{i}" for i in range(20)], "b": ["only1", "only2"], "c": ["single"]}
    split = assign_splits(sources, 0.1)
    assert split == assign_splits(sources, 0.1)
    assert sum(split[("a", s)] == "test" for s in sources["a"]) == 2
    assert sorted(split[("b", s)] for s in sources["b"]) == ["test", "train"]
    assert split[("c", "single")] == "train"


def test_no_text_of_a_test_document_is_in_the_train_split(tiny_params):
    corpus = build_corpus(StudyConfig.from_params(**tiny_params), progress=False)
    table = corpus.dataset.to_pandas()
    test_sources = set(table[table.split == "test"].source_id)
    assert test_sources and not test_sources & set(table[table.split == "train"].source_id)
    assert set(table.domain) == {"code", "prose", "math"}
    for domain, counts in corpus.manifest["documents per domain"].items():
        assert counts["test"] > 0 and counts["train"] > 0


def test_corpus_is_cached_and_tampering_is_detected(tiny_params):
    config = StudyConfig.from_params(**tiny_params)
    first = build_corpus(config, progress=False)
    again = build_corpus(config, progress=False)
    assert again.fingerprint == first.fingerprint and again.path == first.path
    manifest = json.loads((first.path / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 16
    (first.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="fingerprint"):
        load_corpus(first.path)


def test_test_documents_are_a_prefix_stable_sample(tiny_params):
    corpus = build_corpus(StudyConfig.from_params(**tiny_params), progress=False)
    one = [d["id"] for d in corpus.test_documents(1, seed=0)]
    two = [d["id"] for d in corpus.test_documents(2, seed=0)]
    assert len(one) == 3 and set(one) <= set(two)
    assert all(d["split"] == "test" for d in corpus.test_documents(2, seed=0))


def test_empty_corpus_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = StudyConfig.from_params(corpus=str(empty), work_dir=str(tmp_path / "w"))
    with pytest.raises(ValueError, match="corpus=.*yielded no documents"):
        build_corpus(config, progress=False)


def test_a_datasets_folder_stands_in_for_a_hub_dataset_id(tmp_path, pile_file):
    """`corpus="<datasets id>"` streams through datasets.load_dataset; a local parquet folder takes that path."""
    import datasets

    records = list(read_pile_jsonl(pile_file))
    folder = tmp_path / "hub-stand-in"
    folder.mkdir()
    datasets.Dataset.from_list(records).to_parquet(str(folder / "train.parquet"))
    config = StudyConfig.from_params(corpus=str(folder), chunk_bytes=300, test_fraction=0.25,
                                     work_dir=str(tmp_path / "w"))
    corpus = build_corpus(config, progress=False)
    assert sorted(corpus.manifest["documents per domain"]) == ["code", "math", "prose"]


def test_unknown_minipile_domain_is_rejected_before_any_work(tmp_path):
    config = StudyConfig.from_params(domains="code_python,klingon", work_dir=str(tmp_path))
    with pytest.raises(ValueError, match="invalid domains=.*klingon"):
        build_corpus(config, progress=False)


def test_the_piles_set_names_become_its_task_names_and_carry_the_pile_weights(tmp_path):
    from ttt_core.corpus import PILE_TASK_OF_SET
    from ttt_core.metrics import PILE_WEIGHTS, pile_weights

    assert sorted(PILE_TASK_OF_SET.values()) == sorted(PILE_WEIGHTS)  # all 22 tasks, each once
    path = tmp_path / "pile.jsonl"
    with open(path, "w") as f:
        for name in ("Pile-CC", "USPTO Backgrounds", "Github", "my-own-set"):
            for i in range(6):
                f.write(json.dumps({"text": f"{name} document {i} " * 20, "meta": {"pile_set_name": name}}) + "\n")
    corpus = build_corpus(StudyConfig.from_params(corpus=str(path), work_dir=str(tmp_path / "work"),
                                                  chunk_bytes=None), progress=False)
    assert corpus.domains == ["github", "my-own-set", "pile-cc", "uspto"]
    weights = pile_weights(corpus.domains, corpus.manifest["pile_set_name"])
    assert weights["my-own-set"] == 0  # not a Pile task: no weight in the Pile aggregate
    assert weights["pile-cc"] / weights["uspto"] == pytest.approx(PILE_WEIGHTS["pile-cc"] / PILE_WEIGHTS["uspto"])


def test_the_official_pile_layout_keeps_the_piles_own_split_whole_documents_and_shards(tmp_path):
    from conftest import write_pile_layout

    from ttt_core.corpus import PILE_TASK_OF_SET, read_pile_jsonl

    pile = write_pile_layout(tmp_path / "pile", shards=3, docs_per_task=5)
    config = StudyConfig.from_params(corpus=str(pile), chunk_bytes=None, domain_bytes=10**12,
                                     work_dir=str(tmp_path / "work"))
    corpus = build_corpus(config, progress=False)
    table = corpus.dataset.to_pandas()
    assert sorted(corpus.domains) == sorted(PILE_TASK_OF_SET.values())  # all 22 tasks
    sizes = table.groupby(["domain", "split"]).size().unstack()  # 3 shards x 5 train documents, 5 test
    assert len(sizes) == 22 and (sizes["train"] == 15).all() and (sizes["test"] == 5).all()
    # whole documents, each in the split of the file it came from, train rows tagged with their shard
    test_texts = [r["text"] for r in read_pile_jsonl(pile / "test.jsonl.zst")]
    assert sorted(table[table.split == "test"].text) == sorted(test_texts)
    assert set(table[table.split == "train"].shard) == {"00", "01", "02"} and (table.chunk == 0).all()
    assert table[table.split == "train"].text.str.startswith("train").all()
    assert build_corpus(config, progress=False).fingerprint == corpus.fingerprint  # cached, verified on load


def test_test_portion_is_the_official_per_task_subsample(tmp_path):
    import random

    from conftest import write_pile_layout

    from ttt_core.corpus import PILE_TASK_OF_SET, read_pile_jsonl

    pile = write_pile_layout(tmp_path / "pile", shards=1, docs_per_task=11)
    corpus = build_corpus(StudyConfig.from_params(corpus=str(pile), chunk_bytes=None, work_dir=str(tmp_path / "w")),
                          progress=False)
    picked = corpus.test_documents(1, seed=0, portion=0.2, portion_seed=1216)
    # eval_tttlm.py: a task's documents in file order, random.Random(1216).shuffle, the first int(0.2 * n)
    for name, task in PILE_TASK_OF_SET.items():
        docs = [r["text"] for r in read_pile_jsonl(pile / "test.jsonl.zst") if r["meta"]["pile_set_name"] == name]
        random.Random(1216).shuffle(docs)
        assert [d["text"] for d in picked if d["domain"] == task] == docs[:int(0.2 * len(docs))]
    assert len(picked) == 22 * 2
    with pytest.raises(ValueError, match="invalid test_portion=1.5"):
        StudyConfig.from_params(test_portion=1.5).validate()


def test_a_study_on_the_pile_layout_searches_its_shards_exactly_and_trains(tmp_path):
    """The whole path at the paper's shape, in miniature: layout corpus, per-shard index, exact merged search,
    TTT-NN on the paper's 20 % of the test documents, and the Pile weights."""
    import numpy as np
    from conftest import write_pile_layout

    from ttt_core.index import NeighborIndex
    from ttt_core.metrics import pile_weights
    from ttt_core.shards import ShardedIndex
    from ttt_core.study import prepare, run_ttt

    pile = write_pile_layout(tmp_path / "pile", shards=3, docs_per_task=5)
    params = dict(corpus=str(pile), chunk_bytes=None, decontam_threshold=None, test_portion=0.2, k=2,
                  model="tiny-gpt2", embedder="tiny-bert", learning_rate=1e-3, device="cpu",
                  work_dir=str(tmp_path / "work"), domains=("github", "pile-cc", "arxiv"))
    with pytest.raises(ValueError, match="invalid decontam_threshold=0.1 for a corpus in the Pile layout"):
        prepare(StudyConfig.from_params(**{**params, "decontam_threshold": 0.1}), progress=False)
    study = prepare(StudyConfig.from_params(**params), progress=False)
    assert isinstance(study.index, ShardedIndex) and study.index.shards == ["00", "01", "02"]
    train = study.corpus.rows("train")
    vectors = study.embedder.encode(study.corpus.texts(train))
    flat = NeighborIndex.from_embeddings(vectors, train, {"metric": "l2"})
    queries = study.embedder.encode(study.corpus.texts(study.corpus.rows("test")))
    assert np.array_equal(study.index.search(queries, 7)[1], flat.search(queries, 7)[1])
    assert sorted(study.index.rows) == sorted(train)
    rows = run_ttt(study, progress=False)
    assert len(rows) == 3 and all(len(r["neighbors"]) == 2 for r in rows)  # int(0.2 * 5) = 1 per task
    assert pile_weights(study.corpus.domains, study.pile_set_names)["pile-cc"] > 0.5  # 18.11 of 34.66
    # An approximate index per shard, as an option: the same study with IVF reports its recall against exact.
    approximate = prepare(StudyConfig.from_params(**{**params, "index_type": "ivf", "index_nprobe": 10_000}),
                          progress=False)
    assert approximate.index.index_type == "ivf" and approximate.index.meta["recall@2"] == 1.0
    assert np.array_equal(approximate.index.search(queries, 7)[1], flat.search(queries, 7)[1])
