"""Per-document results, appended to a JSON-lines file the moment a document finishes.

The file is named by the run key (a hash of everything that changes a result), and each row is keyed by
document id, so a killed run resumes where it stopped with no lost and no duplicated rows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

import pandas as pd


class Eval(TypedDict):
    """The document's score after `k` neighbours: bits per byte = -loglik / n_bytes / ln 2
    (`metrics.bits_per_byte`, with the row's n_bytes)."""
    k: int  # neighbours trained on before this score (0: the model as loaded)
    loglik: float  # log-likelihood of the document, nats, summed over its scored tokens
    n_tokens: int  # tokens scored


class ResultRow(TypedDict):
    """One test document of a TTT-NN run, as `ttt.test_time_train` returns it and the results file stores it (one
    JSON line). Lists over neighbours are in training order, nearest first."""
    doc_id: str
    domain: str  # the corpus domain (mini-Pile) or the Pile set
    pile_set_name: str  # the Pile task the domain stands for: the key of the Pile weights
    group: str  # content group, the independent unit the bootstrap resamples
    source_id: str  # the source document the test chunk was cut from
    n_bytes: int  # UTF-8 bytes of the scored text
    evals: list[Eval]  # at each k of `config.ks` up to the neighbours there were
    train_loss: list[float]  # training loss of each neighbour, nats per token (mean over its chunks)
    train_steps: list[int]  # optimizer steps each neighbour took (its chunks of max_length tokens)
    train_seconds: list[float]  # wall seconds of each neighbour's training
    distances: list[float]  # each neighbour's retrieval distance (the index's own metric)
    neighbors: list[str]  # the neighbours' chunk ids


class ResultsStore:
    """The rows of one run key, one JSON line each, keyed by doc_id: `append` writes and fsyncs a row before it
    counts as done; a line cut short by a kill is dropped (with everything after it) when the file is read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        good_bytes = 0
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # a row cut short by a kill: drop it and everything after
                if not line.endswith(b"\n"):
                    break
                self.rows.setdefault(row["doc_id"], row)
                good_bytes += len(line)
        if good_bytes != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: dict) -> None:
        """Store `row` (a ResultRow, or a baselines/context row: any JSON object with a `doc_id`) durably."""
        if row["doc_id"] in self.rows:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["doc_id"]] = row


def cut_row(row: ResultRow, k: int) -> ResultRow:
    """A result row of a run with more neighbours, as the run with `k` would have produced it: neighbours are
    trained nearest first, so the first k steps (and the scores after them) are the same."""
    return dict(row, evals=[e for e in row["evals"] if e["k"] <= k], train_loss=row["train_loss"][:k],
                train_steps=row["train_steps"][:k], train_seconds=row["train_seconds"][:k],
                distances=row["distances"][:k], neighbors=row["neighbors"][:k])


def evaluated_at(row: dict | None, k: int) -> bool:
    """Whether a stored row was scored after exactly k neighbours (so it can stand for a run with that k)."""
    return row is not None and any(e["k"] == k for e in row["evals"])


def reusable_stores(folder: Path, inputs: dict) -> list["ResultsStore"]:
    """Result files of runs that differ from `inputs` only by a larger k: the same configuration otherwise and
    the same content identities (what was indexed, the weights, the library versions, `Study.result_inputs`).

    Only when every document starts from a fresh optimizer: with `reset_optimizer=False` the Adam moments
    carried in from earlier documents differ between the two runs, so a cut row is not what the smaller run
    computes. And only for nearest neighbours: SIFT's candidate pool and HullFT's multiset depend on k, so the
    first k steps of a larger selection are not a smaller one."""
    if not inputs.get("reset_optimizer", True) or inputs.get("selection", "nearest") != "nearest":
        return []
    found = []
    for sidecar in sorted(Path(folder).glob("*.config.json")):
        other = json.loads(sidecar.read_text())
        if other.get("k", -1) > inputs["k"] and {**other, "k": inputs["k"]} == inputs:
            found.append(ResultsStore(sidecar.with_name(sidecar.name.replace(".config.json", ".jsonl"))))
    return found


# Parameters that only choose which train chunks the index holds, and the fingerprint of what it holds: with the
# same neighbours retrieved (by the same embedder weights, compared apart), a document's result is the same
# whatever they are.
INDEX_SELECTION = ("index_fraction", "decontam_threshold", "leaky_index", "index_fingerprint")


def same_neighbor_stores(folder: Path, inputs: dict) -> list["ResultsStore"]:
    """Result files of runs that differ from `inputs` only in which chunks were indexed (INDEX_SELECTION, and by a
    k at least as large), never in weights or library versions: a row of theirs whose first k neighbours are the
    ones this run retrieves is exactly this run's row (`run_ttt` checks the neighbours). Only nearest-neighbour
    runs with a fresh optimizer per document qualify."""
    if not inputs.get("reset_optimizer", True) or inputs.get("neighbors", "nearest") != "nearest":
        return []
    found = []
    for sidecar in sorted(Path(folder).glob("*.config.json")):
        other = json.loads(sidecar.read_text())
        aligned = {**other, "k": inputs["k"], **{name: inputs.get(name) for name in INDEX_SELECTION}}
        if other.get("k", -1) >= inputs["k"] and aligned == inputs and other != inputs:
            found.append(ResultsStore(sidecar.with_name(sidecar.name.replace(".config.json", ".jsonl"))))
    return found


def long_frame(rows: list[ResultRow]) -> pd.DataFrame:
    """One line per (document, k): the shape every metric and plot takes."""
    records = []
    for row in rows:
        for point in row["evals"]:
            records.append({"doc_id": row["doc_id"], "domain": row["domain"], "pile_set_name": row["pile_set_name"],
                            "group": row.get("group", row["doc_id"]), "n_bytes": row["n_bytes"], **point})
    return pd.DataFrame(records)


def training_frame(rows: list[ResultRow]) -> pd.DataFrame:
    """One line per (document, neighbour): training loss, distance and seconds of each TTT step."""
    records = []
    for row in rows:
        for i, (loss, steps, seconds, dist) in enumerate(zip(row["train_loss"], row["train_steps"],
                                                             row["train_seconds"], row["distances"])):
            records.append({"doc_id": row["doc_id"], "domain": row["domain"], "neighbor": i + 1, "loss": loss,
                            "steps": steps, "seconds": seconds, "distance": dist})
    return pd.DataFrame(records)
