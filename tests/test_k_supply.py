"""k larger than the neighbours a rule can draw is refused before any training, for every rule and control."""
import json
import random

import pytest

import ttt_core.study as study_module
from ttt_core.config import StudyConfig
from ttt_core.retrieve import random_neighbors, retrieve
from ttt_core.study import prepare, run_ttt

WORDS = "the a of and to in is was he she it that with as his her by on".split()


@pytest.fixture
def four_documents(tmp_path):
    """The issue's corpus: 4 short documents, a few train chunks at chunk_bytes 300."""
    rng = random.Random(1)
    path = tmp_path / "four.jsonl"
    with open(path, "w") as f:
        for d in range(4):
            text = " ".join(rng.choice(WORDS) for _ in range(120))
            f.write(json.dumps({"text": text, "meta": {"pile_set_name": "prose" if d % 2 else "code"}}) + "\n")
    return path


def params(corpus, tmp_path, **changes):
    return {**dict(model="tiny-llama", embedder="tiny-bert", corpus=str(corpus), k=10, docs_per_domain=1,
                   chunk_bytes=300, test_fraction=0.25, learning_rate=1e-3, bootstrap_samples=20,
                   work_dir=str(tmp_path / "work"), device="cpu"), **changes}


@pytest.mark.parametrize("changes, rule", [
    ({}, "nearest"),
    ({"neighbors": "random-domain"}, "random-domain"),
    ({"neighbors": "random-any"}, "random-any"),
    ({"leaky_index": True, "split_by": "source", "decontam_threshold": None}, "leaky"),
    ({"selection": "sift", "k": 2, "selection_pool": 30}, "sift"),
    ({"selection": "hullft", "k": 2}, "hullft"),
])
def test_k_larger_than_what_can_be_retrieved_is_refused_before_training(four_documents, tmp_path, monkeypatch,
                                                                        changes, rule):
    study = prepare(StudyConfig.from_params(**params(four_documents, tmp_path, **changes)), progress=False)
    assert 0 < len(study.index) < 30  # the tiny corpus holds fewer chunks than asked for

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(study_module, "test_time_train", no_training)
    with pytest.raises(ValueError, match=rf"k=\d+.*{rule}.*only \d+"):
        run_ttt(study, progress=False)


def test_retrieval_itself_refuses_to_return_fewer_than_k(four_documents, tmp_path):
    study = prepare(StudyConfig.from_params(**params(four_documents, tmp_path)), progress=False)
    doc = study.test_documents()[0]
    n = len(study.index)
    assert len(retrieve(doc["text"], n, study.embedder, study.index, study.corpus)) == n
    with pytest.raises(ValueError, match=rf"k={n + 1}.*only {n}"):
        retrieve(doc["text"], n + 1, study.embedder, study.index, study.corpus)
    with pytest.raises(ValueError, match=rf"k={n + 1}.*only {n}"):
        random_neighbors(doc, n + 1, "random-any", study.index, study.corpus)


def test_an_approximate_index_that_misses_neighbours_names_its_search_setting(tmp_path):
    """An IVF index probing one of its cells holds enough chunks for k but finds fewer: the remedy is to probe
    more (index_nprobe), not a smaller k or a larger corpus."""
    rng = random.Random(2)
    path = tmp_path / "thirty.jsonl"
    with open(path, "w") as f:
        for d in range(30):
            text = " ".join(rng.choice(WORDS) for _ in range(120))
            f.write(json.dumps({"text": text, "meta": {"pile_set_name": "prose"}}) + "\n")
    study = prepare(StudyConfig.from_params(**params(path, tmp_path, chunk_bytes=64, index_type="ivf",
                                                     index_nprobe=1, k=60)), progress=False)
    assert study.index.meta["nlist"] >= 2 and len(study.index) >= 60
    with pytest.raises(ValueError, match=r"k=60 .*found only \d+: the approximate index .*raise index_nprobe"):
        retrieve(study.test_documents()[0]["text"], 60, study.embedder, study.index, study.corpus)
