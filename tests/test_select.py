"""Selection rules on constructed embeddings: SIFT skips duplicates and tends to nearest order, Frank-Wolfe's
weights are convex and reconstruct a candidate by itself, integerization is an exact multiset."""
import numpy as np
import pytest

from ttt_core.select import frank_wolfe, hullft, integerize, nearest, select, sift


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


@pytest.fixture
def scene():
    """A query, a candidate close to it and its exact duplicate, and two further candidates in other directions."""
    rng = np.random.default_rng(0)
    q = unit(rng.standard_normal(16))
    near = unit(q + 0.3 * unit(rng.standard_normal(16)))
    other = unit(q + 0.9 * unit(rng.standard_normal(16)))
    far = unit(q + 1.5 * unit(rng.standard_normal(16)))
    candidates = np.stack([near, near.copy(), other, far])
    return q, candidates, ((candidates - q) ** 2).sum(1)


def test_nearest_is_the_distance_order(scene):
    q, candidates, distances = scene
    assert nearest(distances, 3) == [0, 1, 2]


def test_sift_takes_one_copy_of_a_duplicated_candidate(scene):
    q, candidates, distances = scene
    assert nearest(distances, 2) == [0, 1]  # nearest neighbours spend the budget on both copies
    chosen = sift(q, candidates, 2, lam=0.01)
    assert chosen[0] in (0, 1) and len({0, 1} & set(chosen)) == 1 and chosen[1] == 2
    assert len(set(sift(q, candidates, 4, lam=0.01))) == 4  # never the same candidate twice


def test_sift_with_a_large_lambda_is_the_nearest_neighbour_order():
    rng = np.random.default_rng(1)
    q = unit(rng.standard_normal(32))
    candidates = np.stack([unit(q + s * unit(rng.standard_normal(32))) for s in (0.2, 0.5, 0.8, 1.1, 1.4, 2.0)])
    distances = ((candidates - q) ** 2).sum(1)
    assert sift(q, candidates, 6, lam=1e6) == nearest(distances, 6)
    with pytest.raises(ValueError, match="invalid lam=0"):
        sift(q, candidates, 2, lam=0)


def test_frank_wolfe_weights_are_a_convex_combination(scene):
    q, candidates, _ = scene
    w = frank_wolfe(q, candidates, iterations=50)
    assert (w >= 0).all() and np.isclose(w.sum(), 1.0)
    start = ((candidates[int(np.argmin(((candidates - q) ** 2).sum(1)))] - q) ** 2).sum()
    assert ((candidates.T @ w - q) ** 2).sum() <= start + 1e-12  # never worse than the nearest vertex


def test_a_query_equal_to_a_candidate_selects_that_candidate_alone(scene):
    _, candidates, _ = scene
    w = frank_wolfe(candidates[2], candidates)
    assert w[2] == 1.0 and w.sum() == 1.0
    assert hullft(candidates[2], candidates, 5) == [2] * 5


def test_integerize_is_an_exact_multiset_heaviest_first():
    steps = integerize(np.array([0.5, 0.3, 0.2]), 10)
    assert steps == [0] * 5 + [1] * 3 + [2] * 2
    assert sorted(integerize(np.array([0.34, 0.33, 0.33]), 4)) == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="convex weights"):
        integerize(np.array([0.5, 0.6]), 3)


def test_select_dispatches_and_names_the_valid_rules(scene):
    q, candidates, distances = scene
    assert select("nearest", q, candidates, distances, 2) == [0, 1]
    assert len(select("hullft", q, candidates, distances, 7)) == 7
    with pytest.raises(ValueError, match="expected one of"):
        select("random", q, candidates, distances, 2)


@pytest.mark.parametrize("rule", ["sift", "hullft"])
def test_a_study_trains_on_k_steps_chosen_from_the_nearest_candidates(tiny_params, rule):
    from ttt_core.config import StudyConfig
    from ttt_core.retrieve import retrieve
    from ttt_core.study import prepare

    config = StudyConfig.from_params(**{**tiny_params, "selection": rule, "selection_pool": 6}).validate()
    study = prepare(config, progress=False)
    doc = study.corpus.test_documents(1, 0)[0]
    chosen = study.training_texts(doc)
    pool = {n.row for n in retrieve(doc["text"], 6, study.embedder, study.index, study.corpus)}
    assert len(chosen) == config.k and {n.row for n in chosen} <= pool
    if rule == "sift":
        assert len({n.row for n in chosen}) == config.k
    with pytest.raises(ValueError, match="invalid selection_pool=2"):
        StudyConfig.from_params(**{**tiny_params, "selection": rule, "selection_pool": 2}).validate()
