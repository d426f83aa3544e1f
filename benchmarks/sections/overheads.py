"""The overheads section: restore, retrieval and scoring as shares of one document's TTT-NN time.

Per document at k = `--k`: the total wall time (s) and each part's share of it (%): retrieval, restore (snapshot,
weights and optimizer reset in place), scoring, training and the rest; and their mean (goals: restore < 2 %,
everything but training < 15 % at k = 50)."""
from __future__ import annotations

import time

import numpy as np

from common import protocol_documents, study_config


class Timers:
    """Wall time spent inside named functions of `ttt_core.ttt`, patched for the duration of a `with`."""

    def __init__(self, module, names):
        self.module, self.names, self.seconds, self.saved = module, names, dict.fromkeys(names, 0.0), {}

    def __enter__(self):
        for name in self.names:
            original = self.saved[name] = getattr(self.module, name)

            def timed(*a, _original=original, _name=name, **kw):
                start = time.perf_counter()
                try:
                    return _original(*a, **kw)
                finally:
                    self.seconds[_name] += time.perf_counter() - start
            setattr(self.module, name, timed)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(self.module, name, original)


def run(args) -> dict:
    from ttt_core import ttt
    from ttt_core.study import prepare

    config = study_config(args.params, k=args.k, device=args.device)
    study = prepare(config, progress=False)
    lm = study.language_model()
    names = ("snapshot_weights", "reset_weights", "reset_optimizer", "score_text", "train_on_text")
    rows = []
    optimizer = ttt.make_optimizer(lm.model, config)  # one per run, as run_ttt: reset in place between documents
    for doc in protocol_documents(study, args.docs):
        start = time.perf_counter()
        neighbors = study.training_texts(doc)
        retrieval = time.perf_counter() - start
        with Timers(ttt, names) as timers:
            start = time.perf_counter()
            ttt.test_time_train(lm, doc, neighbors, config, optimizer)
            inside = time.perf_counter() - start
        total = retrieval + inside
        parts = {"retrieval": retrieval, "restore (snapshot, weights and optimizer reset in place)":
                 sum(timers.seconds[n] for n in names[:3]), "scoring": timers.seconds["score_text"],
                 "training": timers.seconds["train_on_text"]}
        parts["other"] = total - sum(parts.values())
        rows.append({"document": doc["id"], "total s": total, **{f"{p} %": 100 * s / total for p, s in parts.items()}})
        print(rows[-1], flush=True)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "document"}
    return {"rows": rows, "mean": mean, "k": config.k, "model": config.model,
            "goal": "restore < 2 %, everything but training < 15 % at k = 50"}
