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
    for retriever in ("bm25", "rerank"):  # one in-memory index of every chunk: refused before any work
        with pytest.raises(ValueError, match=f"invalid retriever='{retriever}' for a corpus in the Pile layout.*"
                                             "expected 'dense'"):
            prepare(StudyConfig.from_params(**{**params, "retriever": retriever}), progress=False)
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
    # the corpus holds all 22 tasks (`domains` picks the test documents); the aggregate weighs the run's three
    assert len(study.corpus.domains) == 22 and {r["domain"] for r in rows} == {"github", "pile-cc", "arxiv"}
    assert pile_weights(sorted({r["domain"] for r in rows}), study.pile_set_names)["pile-cc"] > 0.5  # 18.11 of 34.66
    # An approximate index per shard, as an option: the same study with IVF reports its recall against exact.
    approximate = prepare(StudyConfig.from_params(**{**params, "index_type": "ivf", "index_nprobe": 10_000}),
                          progress=False)
    assert approximate.index.index_type == "ivf" and approximate.index.meta["recall@2"] == 1.0
    assert np.array_equal(approximate.index.search(queries, 7)[1], flat.search(queries, 7)[1])


# ---------------------------------------------------------------------------------------------- faults of the issue
def _write_records(path, records, compress=False, raw_lines=()):
    """Pile-format lines (dicts are dumped, strings and bytes written as they are) to .jsonl or .jsonl.zst."""
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in records]
    data = b"".join(line + b"\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if compress else data)
    return path


def _sets(n_sets=2, docs=100, size=5000, tag="doc"):
    return [{"text": f"{tag} {s} {i} " + ("word%d " % (i % 13)) * (size // 6), "meta": {"pile_set_name": f"set{s}"}}
            for s in range(n_sets) for i in range(docs)]


@pytest.mark.parametrize("form", ["jsonl", "zst", "folder", "layout"])
def test_user_corpus_is_never_silently_cut(tmp_path, form):
    """2 sets x 100 documents of 5 KB: every document is read by default (the budget is a mini-Pile knob), and
    `docs_per_domain` beyond what a domain holds is said, not silently shortened."""
    records = _sets()
    if form == "jsonl":
        corpus = _write_records(tmp_path / "mine.jsonl", records)
    elif form == "zst":
        corpus = _write_records(tmp_path / "mine.jsonl.zst", records, compress=True)
    elif form == "folder":
        _write_records(tmp_path / "mine" / "a.jsonl", records[::2])
        corpus = _write_records(tmp_path / "mine" / "b.jsonl.zst", records[1::2], compress=True).parent
    else:  # the Pile layout: 100 train documents per set in one shard, 100 test documents per set
        _write_records(tmp_path / "mine" / "train" / "00.jsonl.zst", records, compress=True)
        corpus = _write_records(tmp_path / "mine" / "test.jsonl", _sets(tag="test")).parent
    config = StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, work_dir=str(tmp_path / "w"))
    built = build_corpus(config.validate(), progress=False)
    counts = built.manifest["documents per domain"]
    total = 200 if form == "layout" else 100
    assert {d: c["train"] + c["test"] for d, c in counts.items()} == {"set0": total, "set1": total}
    # An explicit cap cuts any corpus, and says so: read, kept and dropped per set, in the manifest and a warning.
    capped = StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, domain_bytes=100_000,
                                     work_dir=str(tmp_path / "w"))
    with pytest.warns(UserWarning, match=r"domain_bytes=100000 cut .*set0: read \d+, kept \d+, dropped \d+"):
        cut = build_corpus(capped, progress=False)
    read = cut.manifest["documents read"]
    assert read["set0"]["read"] == 100 * (2 if form == "layout" else 1)
    assert read["set0"]["kept"] + read["set0"]["dropped"] == read["set0"]["read"]
    assert read["set0"]["bytes kept"] < read["set0"]["bytes read"]
    n_test = counts["set0"]["test"]
    with pytest.warns(UserWarning, match=f"docs_per_domain=500.*'set0' has {n_test}"):
        assert len(built.test_documents(500, seed=0)) == n_test + counts["set1"]["test"]


def test_a_capped_corpus_warns_again_when_loaded_from_its_cache(tmp_path):
    corpus = _write_records(tmp_path / "mine.jsonl", _sets(docs=30))
    config = StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, domain_bytes=50_000,
                                     work_dir=str(tmp_path / "w"))
    with pytest.warns(UserWarning, match="dropped"):
        build_corpus(config, progress=False)
    with pytest.warns(UserWarning, match="dropped"):
        build_corpus(config, progress=False)


def test_the_minipile_keeps_its_budget_and_cache_name_at_the_default():
    from ttt_core.corpus import _corpus_key, domain_budget

    default = StudyConfig()
    assert default.domain_bytes is None and domain_budget(default) == 40_000_000
    assert domain_budget(StudyConfig(corpus="my.jsonl")) is None  # a user's corpus: read whole
    assert domain_budget(StudyConfig(corpus="my.jsonl", domain_bytes=10)) == 10
    # the same cache (and so the same corpus) as an explicit 40,000,000, and as before `domains` left the key
    assert _corpus_key(default) == _corpus_key(StudyConfig(domain_bytes=40_000_000))
    assert _corpus_key(default) == _corpus_key(StudyConfig(domains=("code_python",)))


def _damaged(tmp_path, kind):
    """(path, what the error must say) for one kind of damaged input file."""
    good = [{"text": f"document {i} " * 30, "meta": {"pile_set_name": "a"}} for i in range(6)]
    if kind == "broken line":
        return _write_records(tmp_path / "bad.jsonl", good[:2] + ['{"text": "x", '] + good[2:]), r"bad\.jsonl:3: "
    if kind == "not utf-8":
        return _write_records(tmp_path / "bad.jsonl", good[:1] + [b'{"text": "caf\xe9"}'] + good), r"bad\.jsonl:2: "
    if kind == "ends mid-record":
        path = _write_records(tmp_path / "bad.jsonl", good)
        path.write_bytes(path.read_bytes()[:-25])
        return path, r"bad\.jsonl:6: "
    if kind == "not an object":
        return _write_records(tmp_path / "bad.jsonl", good[:3] + ["[1, 2]"]), r"bad\.jsonl:4: .*object"
    if kind == "text not a str":
        return _write_records(tmp_path / "bad.jsonl", good[:1] + [{"text": 5}]), r"bad\.jsonl:2: .*'text'"
    if kind == "meta not an object":
        return (_write_records(tmp_path / "bad.jsonl", good[:1] + [{"text": "x", "meta": "Github"}]),
                r"bad\.jsonl:2: .*'meta'")
    if kind == "small zst cut":  # the last 12 bytes of a one-frame file
        path = _write_records(tmp_path / "bad.jsonl.zst", good, compress=True)
        path.write_bytes(path.read_bytes()[:-12])
        return path, r"bad\.jsonl\.zst:\d+: .*ends inside a zstd frame"
    if kind == "large zst cut":
        path = _write_records(tmp_path / "bad.jsonl.zst", _sets(n_sets=1, docs=400, size=2000), compress=True)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, r"bad\.jsonl\.zst:\d+: .*ends inside a zstd frame"
    if kind == "empty zst":  # cut to nothing: not even the frame an empty text compresses to
        path = tmp_path / "bad.jsonl.zst"
        path.write_bytes(b"")
        return path, r"bad\.jsonl\.zst:1: .*empty"
    if kind == "not zstd":
        return _write_records(tmp_path / "bad.jsonl.zst", good), r"bad\.jsonl\.zst:1: .*zstd"
    raise AssertionError(kind)


DAMAGES = ["broken line", "not utf-8", "ends mid-record", "not an object", "text not a str", "meta not an object",
           "small zst cut", "large zst cut", "empty zst", "not zstd"]


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_input_file_is_an_error_naming_the_file_and_line(tmp_path, kind):
    path, message = _damaged(tmp_path, kind)
    with pytest.raises(ValueError, match=message) as error:
        list(read_pile_jsonl(path))
    assert error.value.__cause__ is not None or kind in ("not an object", "text not a str", "meta not an object")


@pytest.mark.parametrize("reader", ["file", "folder", "layout train", "layout test"])
@pytest.mark.parametrize("kind", ["small zst cut", "broken line"])
def test_every_corpus_reader_stops_at_a_damaged_file(tmp_path, reader, kind):
    damaged, message = _damaged(tmp_path / "src", kind)
    good = _sets(n_sets=1, docs=4, size=300)
    root = tmp_path / "corpus"
    if reader == "file":
        corpus = damaged
    elif reader == "folder":
        _write_records(root / "a.jsonl", good)
        corpus = root
        damaged.rename(root / damaged.name)
    else:
        _write_records(root / "train" / "00.jsonl", good)
        _write_records(root / "test.jsonl", good)
        target = root / "train" / f"01{''.join(damaged.suffixes)}" if reader == "layout train" else \
            root / f"test{''.join(damaged.suffixes)}"
        if reader == "layout test":
            (root / "test.jsonl").unlink()
        damaged.rename(target)
        message = message.replace("bad", "01" if reader == "layout train" else "test")
        corpus = root
    config = StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, work_dir=str(tmp_path / "w"))
    with pytest.raises(ValueError, match=message):
        build_corpus(config, progress=False)


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path):
    """Concatenated frames (pzstd, `cat a.zst b.zst`) are one valid stream: every frame is read."""
    records = _sets(n_sets=1, docs=50, size=500)
    first, second = (zstandard.ZstdCompressor().compress(b"".join(json.dumps(r).encode() + b"\n" for r in part))
                     for part in (records[:20], records[20:]))
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(first + second)
    assert list(read_pile_jsonl(path)) == records


def test_a_text_or_meta_of_another_type_is_read_as_documented_or_named(tmp_path):
    path = _write_records(tmp_path / "odd.jsonl", [
        {"text": None, "meta": {"pile_set_name": "Github"}},  # null text: the official code's " "
        {"text": "a JSON string meta", "meta": json.dumps({"pile_set_name": "Github"})},  # parsed
        {"text": "no meta at all"}, {"text": "no set name", "meta": {"source": "x"}},
        {"text": "null meta", "meta": None}])
    records = list(read_pile_jsonl(path))
    assert records[0]["text"] == " " and records[1]["meta"] == {"pile_set_name": "Github"}
    config = StudyConfig.from_params(corpus=str(path), chunk_bytes=None, work_dir=str(tmp_path / "w"))
    with pytest.warns(UserWarning, match="3 records have no meta.pile_set_name"):
        corpus = build_corpus(config, progress=False)
    assert corpus.domains == ["github", "unknown"]
    assert corpus.manifest["records without pile_set_name"] == 3


def _unknown_domain_fails_before_the_embedder(monkeypatch, config):
    from ttt_core import study

    def no_embedder(*args, **kwargs):
        raise AssertionError("the embedder was loaded before the domains were checked")

    monkeypatch.setattr(study, "load_embedder", no_embedder)
    with pytest.raises(ValueError, match=r"invalid domains=\['githb'\]: 'githb' is not a domain of this corpus.*"
                                         r"did you mean 'github'.*its domains: \['code', 'github', 'prose'\]"):
        study.prepare(config, progress=False)


@pytest.mark.parametrize("form", ["jsonl", "layout"])
def test_domains_select_test_documents_only_and_an_unknown_one_fails_at_once(tmp_path, monkeypatch, form):
    records = [{"text": f"{name} text {i} " * 20, "meta": {"pile_set_name": name}}
               for name in ("Github", "code", "prose") for i in range(12)]
    if form == "jsonl":
        corpus = _write_records(tmp_path / "mine.jsonl", records)
    else:
        _write_records(tmp_path / "mine" / "train" / "00.jsonl", records)
        corpus = _write_records(tmp_path / "mine" / "test.jsonl", records).parent
    params = dict(corpus=str(corpus), chunk_bytes=None, decontam_threshold=None, model="tiny-gpt2",
                  embedder="tiny-bert", device="cpu", work_dir=str(tmp_path / "w"))
    _unknown_domain_fails_before_the_embedder(monkeypatch, StudyConfig.from_params(**params, domains="githb"))
    # One meaning for every corpus: the corpus (and so the index) holds every domain, the test documents are
    # drawn from the named ones only.
    full = build_corpus(StudyConfig.from_params(**params), progress=False)
    subset = build_corpus(StudyConfig.from_params(**params, domains="github"), progress=False)
    assert subset.fingerprint == full.fingerprint and subset.domains == ["code", "github", "prose"]
    picked = subset.test_documents(1, seed=0, domains=("github",))
    assert {d["domain"] for d in picked} == {"github"}
    assert [d["id"] for d in picked] == [d["id"] for d in full.test_documents(1, seed=0) if d["domain"] == "github"]


def _three_sets(test_docs=(("code", 6), ("math", 3), ("prose", 3)), train_docs=4):
    return ([{"text": f"{name} train {i} " * 20, "meta": {"pile_set_name": name}}
             for name, _ in test_docs for i in range(train_docs)],
            [{"text": f"{name} test {i} " * 20, "meta": {"pile_set_name": name}}
             for name, n in test_docs for i in range(n)])


@pytest.mark.parametrize("form", ["folder", "file"])
def test_run_keys_never_serve_a_corpus_edited_in_place(tmp_path, form):
    """The cache (and so the fingerprint that keys result rows) follows the files' content: a file of a folder
    rewritten in place leaves the folder's mtime alone, and `cp -p` / `rsync -t` put a file's mtime back."""
    import os

    from ttt_core.corpus import corpus_folder

    records = _sets(docs=10, size=200)
    if form == "folder":
        _write_records(tmp_path / "mine" / "a.jsonl", records)
        _write_records(tmp_path / "mine" / "b.jsonl", records[:3])
        corpus, edited = tmp_path / "mine", tmp_path / "mine" / "a.jsonl"
    else:
        corpus = edited = _write_records(tmp_path / "mine.jsonl", records)
    config = StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, work_dir=str(tmp_path / "w"))
    before = build_corpus(config, progress=False)
    folder_stat, file_stat = os.stat(corpus), os.stat(edited)
    _write_records(edited, _sets(docs=10, size=200, tag="new"))  # same name and size class, new text
    os.utime(edited, ns=(file_stat.st_atime_ns, file_stat.st_mtime_ns))
    os.utime(corpus, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    assert corpus_folder(config) != before.path
    after = build_corpus(config, progress=False)
    assert after.fingerprint != before.fingerprint
    assert all(t.startswith("new") for t in after.dataset["text"] if "new" in t) and any(
        t.startswith("new") for t in after.dataset["text"])


def test_test_portion_says_which_domains_it_leaves_without_documents(tmp_path):
    """int(portion * n) is the official rule (eval_tttlm.py) and is kept; a domain it empties is named."""
    train, test = _three_sets()
    _write_records(tmp_path / "mine" / "train" / "00.jsonl", train)
    corpus = _write_records(tmp_path / "mine" / "test.jsonl", test).parent
    built = build_corpus(StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, work_dir=str(tmp_path / "w")),
                         progress=False)
    with pytest.warns(UserWarning, match=r"test_portion=0.2 .*'math' \(3 test documents\).*'prose' \(3 test doc"):
        picked = built.test_documents(1, seed=0, portion=0.2)
    assert [d["domain"] for d in picked] == ["code"]


def test_a_selection_without_test_documents_fails_at_once(tmp_path, monkeypatch):
    """A 1-document domain cannot be split: it has no test documents, and selecting only it is an error, not an
    empty run; a selection that still has test documents warns once per corpus, not on every call."""
    records = _sets(docs=6, size=200) + [{"text": "alone " * 30, "meta": {"pile_set_name": "solo"}}]
    corpus = _write_records(tmp_path / "mine.jsonl", records)
    params = dict(corpus=str(corpus), chunk_bytes=None, decontam_threshold=None, model="tiny-gpt2",
                  embedder="tiny-bert", device="cpu", work_dir=str(tmp_path / "w"))
    built = build_corpus(StudyConfig.from_params(**params), progress=False)
    with pytest.raises(ValueError, match=r"invalid domains=\['solo'\]: .*no test documents.*'solo'.*'set0'"):
        built.test_documents(1, seed=0, domains=("solo",))
    from ttt_core import study

    def no_embedder(*args, **kwargs):
        raise AssertionError("the embedder was loaded before the domains were checked")

    monkeypatch.setattr(study, "load_embedder", no_embedder)
    with pytest.raises(ValueError, match=r"invalid domains=\['solo'\]"):
        study.prepare(StudyConfig.from_params(**params, domains="solo"), progress=False)
    import warnings as w

    with w.catch_warnings(record=True) as seen:
        w.simplefilter("always")
        built.test_documents(1, seed=0, domains=("solo", "set0"))
        built.test_documents(1, seed=0, domains=("solo", "set0"))
    assert len([x for x in seen if "'solo' has 0" in str(x.message)]) == 1


@pytest.mark.parametrize("where", ["file", "layout train", "layout test"])
def test_a_text_that_is_not_unicode_is_an_error_naming_the_file_and_line(tmp_path, where):
    """`\\ud800` is valid JSON but no Unicode text (a lone surrogate): it must fail at its line, not later in
    the tokenizer or the Arrow writer with no file named."""
    bad = b'{"text": "abc \\ud800 def", "meta": {"pile_set_name": "x"}}'
    good = [{"text": f"ok {i} " * 10, "meta": {"pile_set_name": "x"}} for i in range(4)]
    if where == "file":
        corpus = bad_file = _write_records(tmp_path / "mine.jsonl", good + [bad])
    else:
        train = _write_records(tmp_path / "mine" / "train" / "00.jsonl", good + ([bad] if "train" in where else []))
        test = _write_records(tmp_path / "mine" / "test.jsonl", good + ([bad] if "test" in where else []))
        corpus, bad_file = test.parent, train if "train" in where else test
    config = StudyConfig.from_params(corpus=str(corpus), chunk_bytes=None, work_dir=str(tmp_path / "w"))
    with pytest.raises(ValueError, match=rf"{bad_file}:5: .*'text' is not valid Unicode.*surrogate"):
        build_corpus(config, progress=False)


@pytest.mark.parametrize("where", ["folder", "layout train"])
def test_a_corpus_folder_never_skips_a_file_silently(tmp_path, where):
    """Every entry of a corpus folder is read or named: other extensions and subfolders are an error; hidden
    files, README*, LICENSE*, *.md, *.txt and checksum files are not data and are passed over."""
    records = _sets(docs=6, size=200)
    folder = tmp_path / "mine" / ("train" if "train" in where else "")
    _write_records(folder / "00.jsonl", records)
    for name in (".DS_Store", "README", "notes.md", "SHA256SUMS.txt", "00.jsonl.sha256"):
        (folder / name).write_text("not data")
    if "layout" in where:
        _write_records(tmp_path / "mine" / "test.jsonl", records)
    config = StudyConfig.from_params(corpus=str(tmp_path / "mine"), chunk_bytes=None, work_dir=str(tmp_path / "w"))
    build_corpus(config, progress=False)  # only what is not data beside the data: read
    for name in ("b.jsonl.gz", "c.json", "e.JSONL", "f.jsonl.zstd", "sub/d.jsonl"):
        _write_records(folder / name, records)
    config = StudyConfig.from_params(corpus=str(tmp_path / "mine"), chunk_bytes=None, work_dir=str(tmp_path / "w2"))
    with pytest.raises(ValueError, match=r"invalid corpus=.*cannot read \['b.jsonl.gz', 'c.json', 'e.JSONL', "
                                         r"'f.jsonl.zstd', 'sub/'\].*reads .jsonl and .jsonl.zst"):
        build_corpus(config, progress=False)


def test_a_run_stopped_by_failures_says_why_in_its_own_message(tiny_params, monkeypatch):
    """"3 in a row" alone sends the user to the failures file; the stop names the last error's type and first line."""
    from ttt_core import study as study_module

    def broken(*args, **kwargs):
        raise ValueError("a bug in the step\nits second line")

    monkeypatch.setattr(study_module, "test_time_train", broken)
    study = study_module.prepare(StudyConfig.from_params(**{**tiny_params, "docs_per_domain": 2}), progress=False)
    with pytest.raises(RuntimeError, match=r"failed \(3 in a row; the last error: ValueError: a bug in the step\)"):
        study_module.run_ttt(study, progress=False)


# ---------------------------------------------------------------------------------------------- streamed mini-Pile
SYNTHETIC_WORDS = {"alpha": "def return import class self for in if else".split(),
                   "beta": "the a of and to in is was he she it that".split(),
                   "gamma": "solve for x y 1 2 3 + - = let be what".split(),
                   "delta": "tiny".split()}


def _synthetic_sources(calls: dict, fail_in: str | None = None):
    """Four deterministic mini-Pile sources: 'beta' groups documents in pairs (content groups), 'delta' yields only
    documents below MIN_CHARS (an empty domain); `fail_in` raises from that source's stream after three documents
    (a build killed there). `calls` counts how often each stream is opened."""
    import random

    from ttt_core.minipile import TextSource

    def stream_of(domain):
        def stream(seed, download_dir):
            calls[domain] = calls.get(domain, 0) + 1
            rng = random.Random(f"{domain}-{seed}")
            for i in range(40):
                if domain == fail_in and i == 3:
                    raise RuntimeError(f"killed inside {domain}")
                size = 3 if domain == "delta" else rng.randint(60, 400)
                yield f"{domain}-{i:03d}", " ".join(rng.choice(SYNTHETIC_WORDS[domain]) for _ in range(size))
        return stream

    return tuple(TextSource(domain=d, pile_set_name=p, description=f"synthetic {d}", origin="python", package=d,
                            license="none", stream=stream_of(d), is_available=lambda: True,
                            get_version=lambda: "1", content_group=(lambda i: i[:-1]) if d == "beta" else None)
                 for d, p in zip(SYNTHETIC_WORDS, ("github", "pile-cc", "dm-mathematics", "wikipedia")))


def _synthetic_config(tmp_path, **params):
    return StudyConfig.from_params(**{"work_dir": str(tmp_path / "work"), "domain_bytes": 9000, "chunk_bytes": 300,
                                      "test_fraction": 0.25, **params})


def test_the_streamed_minipile_build_gives_the_old_builds_rows(tmp_path, monkeypatch):
    """The rows, their order and the fingerprint are those of the build that held every document in memory
    (fingerprint computed by that code, commit 4bd9d16, on these synthetic sources)."""
    from ttt_core import minipile

    monkeypatch.setattr(minipile, "SOURCES", _synthetic_sources({}))
    corpus = build_corpus(_synthetic_config(tmp_path), progress=False)
    assert corpus.fingerprint == "5a8b5b3849e73374"
    assert corpus.manifest["documents per domain"] == {"alpha": {"train": 30, "test": 5}, "beta": {"train": 30, "test": 7},
                                                       "gamma": {"train": 26, "test": 11}}


def test_a_killed_minipile_build_resumes_from_its_finished_domains(tmp_path, monkeypatch):
    """A build killed inside its second source keeps the first source's shard: the rerun reads that source no
    more and gives the corpus an uninterrupted build gives."""
    from ttt_core import minipile

    calls: dict = {}
    monkeypatch.setattr(minipile, "SOURCES", _synthetic_sources(calls, fail_in="beta"))
    with pytest.raises(RuntimeError, match="killed inside beta"):
        build_corpus(_synthetic_config(tmp_path), progress=False)
    assert calls == {"alpha": 1, "beta": 1}
    monkeypatch.setattr(minipile, "SOURCES", _synthetic_sources(calls))
    resumed = build_corpus(_synthetic_config(tmp_path), progress=False)
    assert calls["alpha"] == 1 and calls["beta"] == 2  # the finished first domain is not read again
    assert not list((tmp_path / "work" / "corpus").glob("*.tmp"))  # the shards go with the atomic rename
    assert resumed.fingerprint == "5a8b5b3849e73374"  # the uninterrupted build's (test above)
    assert [s["domain"] for s in resumed.manifest["sources"]] == ["alpha", "beta", "gamma", "delta"]


def test_a_source_cap_bounds_its_domain_below_domain_bytes_and_keys_the_corpus(tmp_path, monkeypatch):
    """TextSource.max_bytes caps a slow source at min(domain_bytes, max_bytes); the cache key changes only where
    the cap binds (the default mini-Pile keeps its key)."""
    import dataclasses

    from ttt_core import minipile
    from ttt_core.corpus import _corpus_key

    sources = _synthetic_sources({})
    monkeypatch.setattr(minipile, "SOURCES", sources)
    free, free_small = _corpus_key(_synthetic_config(tmp_path)), _corpus_key(_synthetic_config(tmp_path, domain_bytes=1500))
    capped = (dataclasses.replace(sources[0], max_bytes=2000, max_bytes_why="slow: generated"), *sources[1:])
    monkeypatch.setattr(minipile, "SOURCES", capped)
    assert _corpus_key(_synthetic_config(tmp_path, domain_bytes=1500)) == free_small  # 1500 < 2000: it does not bind
    assert _corpus_key(_synthetic_config(tmp_path)) != free  # 2000 < 9000 binds
    corpus = build_corpus(_synthetic_config(tmp_path), progress=False)
    (alpha,) = [s for s in corpus.manifest["sources"] if s["domain"] == "alpha"]
    assert 1000 <= alpha["bytes"] <= 2000 and alpha["max_bytes"] == 2000 and alpha["max_bytes_why"] == "slow: generated"
    beta = [s for s in corpus.manifest["sources"] if s["domain"] == "beta"][0]
    assert beta["bytes"] > 2000 and beta["max_bytes"] is None


# ---------------------------------------------------------------------------------------------- overlaps at scale
def _overlap_corpus(tmp_path, docs_per_domain):
    from conftest import write_pile_jsonl

    path = write_pile_jsonl(tmp_path / "overlap.jsonl", docs_per_domain=docs_per_domain, seed=3)
    return build_corpus(StudyConfig.from_params(corpus=str(path), chunk_bytes=200, test_fraction=0.25,
                                                work_dir=str(tmp_path / "work")), progress=False)


def test_the_overlap_measures_keep_their_numbers_as_defined_on_strings(tmp_path):
    """train_split_overlap and other_source_overlap give the shares their definitions give on sets of n-gram
    strings (the code before they were made to scale)."""
    import numpy as np

    from ttt_core.decontaminate import char_ngrams, other_source_overlap, train_split_overlap

    corpus = _overlap_corpus(tmp_path, 10)
    table = corpus.dataset.to_pandas()
    docs = corpus.test_documents(3, seed=0)
    for n in (13, 50):
        def share(text, reference_rows):
            grams, ref = char_ngrams(text, n), set().union(*(char_ngrams(t, n) for t in table.text[reference_rows]))
            return len(grams & ref) / len(grams)

        train = table.index[table.split == "train"]
        mask = np.arange(len(train)) % 3 != 0
        assert train_split_overlap(corpus, [d["text"] for d in docs], n) == [share(d["text"], train) for d in docs]
        assert train_split_overlap(corpus, [d["text"] for d in docs], n, mask) == [
            share(d["text"], train[mask]) for d in docs]
        other = [share(d["text"], table.index[(table.source_id != d["source_id"]) | (table.domain != d["domain"])])
                 for d in docs]
        assert other_source_overlap(corpus, docs, n) == other
        assert n == 50 or (0 < max(other) and min(other) < 1)  # 13-grams: the texts share some, not all


def test_the_overlap_measures_never_hold_every_train_ngram(tmp_path):
    """At 10^5 chunks a set of every train n-gram (as strings, or as hashes per source) takes > 10 GB: the
    measures hold only the asked documents' n-grams. Here: 1.3 MB of text, whose n-grams as a set of strings take
    ~100 MB; the measures for 3 documents must stay far below."""
    import tracemalloc

    from ttt_core.decontaminate import other_source_overlap, train_split_overlap

    corpus = _overlap_corpus(tmp_path, 1000)
    docs = corpus.test_documents(1, seed=0)
    for measure in (lambda: train_split_overlap(corpus, [d["text"] for d in docs], 50),
                    lambda: other_source_overlap(corpus, docs, 50)):
        tracemalloc.start()
        measure()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 20e6, f"{peak / 1e6:.0f} MB"


def test_own_source_rows_are_the_rows_of_the_documents_source(tmp_path):
    import types

    from ttt_core.study import Study

    corpus = _overlap_corpus(tmp_path, 10)
    table = corpus.dataset.to_pandas()
    fake = types.SimpleNamespace(corpus=corpus)  # own_source_rows needs only the study's corpus
    for doc in corpus.test_documents(2, seed=0):
        rows = Study.own_source_rows(fake, doc)
        assert rows == table.index[(table.source_id == doc["source_id"]) & (table.domain == doc["domain"])].tolist()
        assert doc["row"] in rows and all(type(r) is int for r in rows)


def test_atomic_writes_leave_the_old_artifact_or_the_new_one_never_half(tmp_path):
    from ttt_core.files import atomic_file, atomic_folder

    target = tmp_path / "shares.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["shares.npz"]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o644"
    folder = tmp_path / "index"
    with pytest.raises(RuntimeError), atomic_folder(folder) as tmp:
        (tmp / "meta.json").write_text("{}")
        raise RuntimeError("killed")
    assert not folder.exists() and not list(tmp_path.glob("index.*.tmp"))
    with atomic_folder(folder) as tmp, atomic_folder(folder) as other:  # two writers: neither loses its folder
        (tmp / "meta.json").write_text("{}")
        (other / "meta.json").write_text('{"second": 1}')
    assert (folder / "meta.json").read_text() in ("{}", '{"second": 1}') and not list(tmp_path.glob("index.*.tmp"))
