"""The protocol section: ours (scoring only at the k grid, weights restored in place) against the official code's
protocol (the document re-scored after every neighbour, the model restored from a deep copy).

Per document: the wall time of each (s) and their ratio at k = `--k` (goal >= 3x at k = 50), with the largest relative
difference of the log-likelihoods at the shared k (bits per byte must be equal); then the ratio modelled by document
size (bytes) from one scoring pass's time (s) at each of `--score-bytes`."""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from common import protocol_documents, study_config


def reference_protocol(lm, document: dict, neighbors: list, config) -> dict:
    """The official code's per-document loop (socialfoundations/tttlm @ 99d4e0a, `TTTLM.train` in
    `code/eval_tttlm.py:254-308`, whose per-neighbour time `c_train` is the aggregates' 'training_cost'): a deep
    copy of the model for the document, the whole document re-scored after every neighbour, the copy dropped at
    the end."""
    from ttt_core.metrics import score_text
    from ttt_core.ttt import make_optimizer, train_on_text

    torch.manual_seed(config.seed)
    base = lm.model
    lm.model = copy.deepcopy(base)
    try:
        optimizer = make_optimizer(lm.model, config)
        evals = [score_text(lm, document["text"], config.eval_context, config.max_eval_tokens)["loglik"]]
        for neighbor in neighbors:
            train_on_text(lm, neighbor.text, optimizer, config)
            evals.append(score_text(lm, document["text"], config.eval_context, config.max_eval_tokens)["loglik"])
    finally:
        lm.model = base
    return {"evals": evals}


def run(args) -> dict:
    from ttt_core import ttt
    from ttt_core.study import prepare

    config = study_config(args.params, k=args.k, device=args.device)
    study = prepare(config, progress=False)
    lm = study.language_model()
    rows = []
    docs = protocol_documents(study, args.docs) + protocol_documents(study, args.long_docs, args.long_bytes)
    for doc in docs:
        neighbors = study.training_texts(doc)
        start = time.perf_counter()
        ours = ttt.test_time_train(lm, doc, neighbors, config)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = reference_protocol(lm, doc, neighbors, config)
        reference_s = time.perf_counter() - start
        shared = [(e["k"], e["loglik"], reference["evals"][e["k"]]) for e in ours["evals"]]
        worst = max(abs(a - b) / abs(b) for _, a, b in shared)
        rows.append({"document": doc["id"], "bytes": ours["n_bytes"], "tokens": ours["evals"][0]["n_tokens"],
                     "k": config.k, "train s": sum(ours["train_seconds"]),
                     "ours s": ours_s, "reference s": reference_s, "speed-up": reference_s / ours_s,
                     "shared k": len(shared), "max relative loglik difference": worst})
        print(rows[-1], flush=True)
    # Where the ratio goes with the document's length: both protocols take the same k training steps; ours scores
    # len(ks) times, the reference k + 1 times. Scoring time is measured at growing lengths of test text.
    from ttt_core.metrics import score_text

    train_s = float(np.mean([r["train s"] for r in rows]))
    test_text = "".join(study.corpus.dataset.select(study.corpus.rows("test").tolist())["text"]).encode()
    modelled = []
    for size in args.score_bytes:
        piece = test_text[:size].decode(errors="ignore")
        start = time.perf_counter()
        scored = score_text(lm, piece, config.eval_context, config.max_eval_tokens)
        score_s = time.perf_counter() - start
        ours_s, reference_s = train_s + len(config.ks) * score_s, train_s + (config.k + 1) * score_s
        modelled.append({"bytes": len(piece.encode()), "tokens": scored["n_tokens"], "score s": score_s,
                         f"training s (k = {config.k})": train_s, "modelled speed-up": reference_s / ours_s})
        print(modelled[-1], flush=True)
    short = [r for r in rows if not r["document"].endswith("#whole-source")]
    total = {"ours s": sum(r["ours s"] for r in short), "reference s": sum(r["reference s"] for r in short)}
    whole = [r for r in rows if r["document"].endswith("#whole-source")]
    if whole:
        total["whole-source speed-up"] = sum(r["reference s"] for r in whole) / sum(r["ours s"] for r in whole)
    reaching = [m["bytes"] for m in modelled if m["modelled speed-up"] >= 3]
    return {"rows": rows, "speed-up": total["reference s"] / total["ours s"], **total,
            "modelled by document size": modelled, "smallest document (bytes) modelled at >= 3x":
            min(reaching) if reaching else "none measured", "model": config.model,
            "goal": "speed-up >= 3 at k = 50, bits per byte identical at the shared k"}
