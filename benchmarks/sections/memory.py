"""The memory section: peak resident memory (GB) of one TTT-NN run per model and optimizer, each in its own process
(run.py again, with --memory-child MODEL VARIANT), with its wall time (s), and the bits-per-byte effect of Adafactor
against AdamW where both fit (% per document)."""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from common import RUN, failure_reason, protocol_documents, run_child, study_config


def child(args) -> None:
    """One process, one model and optimizer: TTT-NN on `--docs` documents; prints a JSON line with its peak RSS."""
    import resource

    from ttt_core.metrics import bits_per_byte
    from ttt_core.study import prepare
    from ttt_core.ttt import test_time_train

    model, variant = args.memory_child
    optimizer, _, snapshot = variant.partition("-")
    config = study_config(args.params, model=model, optimizer=optimizer, k=args.memory_k, device=args.device,
                          weights_snapshot=snapshot or "memory")
    study = prepare(config, progress=False)
    lm = study.language_model()
    # Weights, their snapshot in memory (restored after each document) and gradients, 4 bytes each, plus AdamW's
    # two moments: where that alone passes the machine's memory (no swap here) the run is recorded, not attempted,
    # since it would only end in the kernel's out-of-memory killer after minutes of thrashing.
    parts = ["weights", "gradients"] + (["snapshot"] if config.weights_snapshot == "memory" else []) + (
        ["AdamW moments", "AdamW moments"] if optimizer == "adamw" else [])
    needed = lm.n_params * 4 * len(parts) / 1e9
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    if lm.device.type == "cpu" and needed > 0.95 * total:
        print("RESULT " + json.dumps({"k": config.k, "failed": f"not attempted: {', '.join(dict.fromkeys(parts))} "
                                      f"alone need {needed:.1f} GB, the machine has {total:.1f} GB"}), flush=True)
        return
    documents = []
    start = time.perf_counter()
    for doc in protocol_documents(study, args.docs):
        row = test_time_train(lm, doc, study.training_texts(doc), config)
        first, last = row["evals"][0], row["evals"][-1]
        documents.append({"id": doc["id"], "before": bits_per_byte(first["loglik"], row["n_bytes"]),
                          "after": bits_per_byte(last["loglik"], row["n_bytes"])})
    print("RESULT " + json.dumps({"k": config.k,
                                  "seconds": time.perf_counter() - start,
                                  "peak RSS GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                                  "documents": documents}), flush=True)


MEMORY_VARIANTS = {"adamw": "AdamW", "adafactor": "Adafactor",
                   "adafactor-file": "Adafactor, weights restored from the model's file"}


def run(args) -> dict:
    """Each (model, variant) in its own process. Runs of earlier invocations for the other pairs are kept, so a
    single pair (the 1.5B model, say) can be measured again without repeating the rest."""
    previous = json.loads(args.results.read_text()).get("memory", {}).get("result", {}) if args.results.exists() else {}
    runs = {(r["model"], r["variant"]): r for r in previous.get("_runs", [])}
    for model in args.memory_models:
        for variant in args.memory_variants:
            command = [sys.executable, str(RUN), "--memory-child", model, variant, "--docs",
                       str(args.docs), "--memory-k", str(args.memory_k), "--params", str(args.params),
                       "--device", args.device]
            runs[model, variant] = {"model": model, "variant": variant, "measured by": invocation(),
                                    "date": datetime.date.today().isoformat(), **run_child(command)}
            print({k: v for k, v in runs[model, variant].items() if k != "documents"}, flush=True)
    rows, effects = [], []
    for run in runs.values():
        docs = run.get("documents", [])
        rows.append({"model": run["model"], "optimizer": MEMORY_VARIANTS[run["variant"]], "k": run.get("k", ""),
                     "documents": run.get("n_documents", len(docs)), "peak RSS GB": run.get("peak RSS GB", float("nan")),
                     "seconds": run.get("seconds", float("nan")),
                     "mean change %": float(np.mean([100 * (d["after"] - d["before"]) / d["before"] for d in docs]))
                     if docs else run.get("mean change %", float("nan")), "failed": failure_reason(run.get("failed", ""))})
    for model in dict.fromkeys(r["model"] for r in runs.values()):
        pair = {variant: {d["id"]: d["after"] for d in runs[model, variant].get("documents", [])}
                for variant in ("adamw", "adafactor") if (model, variant) in runs}
        if len(pair) == 2 and pair["adamw"] and pair["adafactor"]:
            diffs = [100 * (pair["adafactor"][d] - pair["adamw"][d]) / pair["adamw"][d] for d in pair["adamw"]]
            effects.append({"model": model, "documents": len(diffs),
                            "Adafactor vs AdamW after TTT-NN, mean % per document": float(np.mean(diffs)),
                            "min %": float(np.min(diffs)), "max %": float(np.max(diffs))})
    measured = {e["model"] for e in effects}  # an earlier invocation's effect stays for the models not paired now
    effects += [e for e in previous.get("optimizer effect", []) if e["model"] not in measured]
    commands = list(dict.fromkeys((r.get("measured by", "?"), r.get("date", "?")) for r in runs.values()))
    for row, run in zip(rows, runs.values()):
        row["run"] = 1 + commands.index((run.get("measured by", "?"), run.get("date", "?")))
    return {"rows": rows, "optimizer effect": effects, "_runs": list(runs.values()),
            "runs": [{"run": i + 1, "command": c, "date": d} for i, (c, d) in enumerate(commands)],
            "note": "peak RSS counts the pages of the model's file that safetensors maps (7.1 GB for the 1.5B model): "
                    "page cache the kernel can reclaim, so it overstates what the file-restored run needs",
            "goal": "train Qwen2.5-Coder-1.5B in 24 GB with a cheaper optimizer state; its effect on bits per byte"}


def invocation() -> str:
    """This invocation's command line, as the report shows it."""
    return "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
