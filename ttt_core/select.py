"""Which retrieved candidates to train on: nearest neighbours (the paper), SIFT (Hübotter et al., ICLR 2025) and
convex reconstruction (HullFT, Khamis & Maalouf, 2026). All three choose from the same candidate set (the
`candidates` nearest chunks of the index) and return a list of candidate positions, one training step each, in
the order they are trained on; repeats are allowed only where a rule asks for them (HullFT's multiset).

Written from the papers' descriptions with numpy; `activeft` is a reference for results, not a source of code.
"""
from __future__ import annotations

import numpy as np

from .config import SELECTION_RULES


def nearest(distances: np.ndarray, n: int) -> list[int]:
    """The n closest candidates, nearest first (TTT-NN)."""
    return [int(i) for i in np.argsort(distances, kind="stable")[:n]]


def sift(query: np.ndarray, candidates: np.ndarray, n: int, lam: float = 0.01) -> list[int]:
    """Greedy posterior-variance reduction (SIFT's VTL with one query) under the linear kernel on the
    embeddings, observation noise `lam`: each step takes the candidate x that most lowers Var[f(query)] given the
    chosen set, i.e. maximises Cov(q, x)^2 / (Var(x) + lam) under the current posterior; the posterior is then
    conditioned on x (a rank-one update). A near-duplicate of a chosen candidate has almost no covariance left with
    the query, so it is passed over; with a large `lam` the interactions vanish and the order is that of
    (q . x)^2, the nearest-neighbour order for normalised embeddings. Each candidate is taken at most once."""
    if lam <= 0:
        raise ValueError(f"invalid lam={lam}: expected a positive observation noise (SIFT's lambda, e.g. 0.01)")
    points = np.vstack([query[None, :], candidates]).astype(np.float64)
    cov = points @ points.T  # prior covariance of f at [query, candidates]
    chosen: list[int] = []
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(min(n, len(candidates))):
        gain = cov[0, 1:] ** 2 / (np.diag(cov)[1:] + lam)
        gain[~available] = -np.inf
        j = int(np.argmax(gain))
        column = cov[:, j + 1].copy()
        cov -= np.outer(column, column) / (column[j + 1] + lam)
        chosen.append(j)
        available[j] = False
    return chosen


def frank_wolfe(query: np.ndarray, candidates: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weights w on the simplex (w >= 0, sum 1) with candidates.T @ w close to `query` in squared L2, by
    projection-free Frank-Wolfe with exact line search, started at the nearest candidate: after t steps at most
    t + 1 candidates carry weight (sparse), and a query equal to a candidate is reconstructed by it alone."""
    x = candidates.astype(np.float64)
    q = query.astype(np.float64)
    w = np.zeros(len(x))
    w[int(np.argmin(((x - q) ** 2).sum(1)))] = 1.0
    for _ in range(iterations):
        point = x.T @ w
        residual = q - point
        if residual @ residual < 1e-24:
            break
        vertex = int(np.argmin(-2 * x @ residual))  # the gradient of ||q - X^T w||^2 is -2 X (q - X^T w)
        direction = x[vertex] - point
        denominator = direction @ direction
        if denominator <= 0:
            break
        step = float(np.clip(residual @ direction / denominator, 0.0, 1.0))
        if step == 0.0:
            break
        w *= 1 - step
        w[vertex] += step
    return w


def integerize(weights: np.ndarray, n: int) -> list[int]:
    """An exact multiset of n training steps from fractional weights (largest remainders): candidate i appears
    about n * w_i times; the steps are grouped by candidate, heaviest first."""
    if n < 0 or not np.isclose(weights.sum(), 1.0) or (weights < -1e-12).any():
        raise ValueError("integerize needs convex weights (non-negative, summing to one) and n >= 0")
    exact = weights * n
    counts = np.floor(exact).astype(int)
    remainder = n - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    steps = []
    for i in np.argsort(-weights, kind="stable"):
        steps += [int(i)] * int(counts[i])
    return steps


def hullft(query: np.ndarray, candidates: np.ndarray, n: int, iterations: int = 100) -> list[int]:
    """HullFT: the query as a sparse convex combination of the candidates, turned into n training steps."""
    return integerize(frank_wolfe(query, candidates, iterations), n)


def select(rule: str, query: np.ndarray, candidates: np.ndarray, distances: np.ndarray, n: int,
           lam: float = 0.01, iterations: int = 100) -> list[int]:
    """Dispatch on `rule` (one of SELECTION_RULES); every rule returns n steps (fewer only if there are fewer
    candidates than n and the rule takes each at most once)."""
    if rule == "nearest":
        return nearest(distances, n)
    if rule == "sift":
        return sift(query, candidates, n, lam)
    if rule == "hullft":
        return hullft(query, candidates, n, iterations)
    raise ValueError(f"invalid selection rule {rule!r}: expected one of {list(SELECTION_RULES)}")
