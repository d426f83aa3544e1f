"""`study.vary`: one corpus, many variants of a run, each built as `prepare` would build it."""
import pytest

import ttt_core.decontaminate as decontaminate
from ttt_core.config import StudyConfig
from ttt_core.study import prepare, vary


def test_a_variant_reuses_the_corpus_and_its_measures_and_equals_a_fresh_prepare(tiny_params, monkeypatch):
    study = prepare(StudyConfig.from_params(**tiny_params))
    calls = []
    real = decontaminate.contamination_shares
    monkeypatch.setattr(decontaminate, "contamination_shares", lambda *a: calls.append(1) or real(*a))
    variant = vary(study, index_fraction=0.5, k=2)
    assert variant.corpus is study.corpus and variant.embedder is study.embedder
    assert calls == []  # the decontamination shares of the study's corpus are not computed again
    fresh = prepare(StudyConfig.from_params(**{**tiny_params, "index_fraction": 0.5, "k": 2}))
    assert variant.config == fresh.config
    assert variant.index.rows.tolist() == fresh.index.rows.tolist()
    assert variant.run_key == fresh.run_key
    assert study.config.k == 3 and len(study.index) > len(variant.index)  # the study itself is unchanged


def test_a_variant_loads_another_embedder_or_model_only_when_its_name_changes(tiny_params):
    study = prepare(StudyConfig.from_params(**tiny_params))
    study.language_model()
    same = vary(study, k=1)
    assert same.lm is study.lm
    other = vary(study, model="tiny-gpt2", embedder="tiny-bert-large")
    assert other.lm is None and other.language_model() is not study.lm
    assert other.embedder is not study.embedder and other.index.meta["embedder"] == "tiny-bert-large"


def test_a_variant_that_needs_another_corpus_or_a_misspelt_name_is_refused(tiny_params):
    study = prepare(StudyConfig.from_params(**tiny_params))
    with pytest.raises(ValueError, match=r"\['chunk_bytes'\] change it"):
        vary(study, chunk_bytes=200)
    with pytest.raises(ValueError, match="did you mean 'index_fraction'"):
        vary(study, index_fractoin=0.5)
