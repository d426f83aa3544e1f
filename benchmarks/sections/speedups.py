"""The speedups section: each change made for speed (and each tried) against the code before it, in fresh processes
(run.py again, with --speedup-child MODEL VARIANT) on the same documents: the wall time of the documents after the
first (s), its ratio to the code before's, and the largest relative difference of any log-likelihood from it."""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from common import RUN, failure_reason, protocol_documents, run_child, study_config


def earlier_runs(section: dict, models: set) -> list[dict]:
    """The commands of earlier invocations whose rows a section keeps (for `models`), with their dates."""
    if not models or "command" not in section:
        return []
    earlier = [r for r in section.get("result", {}).get("earlier runs kept", []) if set(r["models"].split(", ")) & models]
    return earlier + [{"command": section["command"], "date": section["date"], "models": ", ".join(sorted(models))}]


def emulate_before() -> None:
    """Patch `ttt_core.ttt` back to the code before the performance changes (commit 8d3f712): large tensors from
    glibc's default allocator (fresh mmap()s) and the optimizer state dropped after every document (a new one
    allocated for the next)."""
    import contextlib

    from ttt_core import ttt

    def apply_gradient(model, optimizer, grad_clip):
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reset_optimizer(optimizer):
        optimizer.state.clear()
    ttt.apply_gradient, ttt.reset_optimizer, ttt.heap_allocation = apply_gradient, reset_optimizer, contextlib.nullcontext


def child(args) -> None:
    """One process, one variant: TTT-NN on `--docs` documents with one optimizer for the run, as `run_ttt`;
    prints a JSON line with the seconds of the first and of the other documents and every log-likelihood."""
    from ttt_core import ttt
    from ttt_core.study import prepare

    model, variant = args.speedup_child
    if variant == "before":
        emulate_before()
    config = study_config(args.params, model=model, k=args.speedup_k, device=args.device)
    study = prepare(config, progress=False)
    lm = study.language_model()
    if variant == "compiled":  # inductor, shapes dynamic so that every neighbour length reuses one graph
        # Inductor's C++ build imports distutils; setuptools' replacement of it fails with "AssertionError:
        # .../distutils/core.py" when the standard one was imported first (pytorch/pytorch#143288): use the standard one.
        os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
        lm.model.forward = torch.compile(lm.model.forward, dynamic=True)
    optimizer = ttt.make_optimizer(lm.model, config)
    seconds, logliks = [], []
    for doc in protocol_documents(study, args.docs):
        neighbors = study.training_texts(doc)
        start = time.perf_counter()
        row = ttt.test_time_train(lm, doc, neighbors, config, optimizer)
        seconds.append(time.perf_counter() - start)
        logliks.append([e["loglik"] for e in row["evals"]])
    print("RESULT " + json.dumps({"seconds": seconds, "logliks": logliks}), flush=True)


def run(args) -> dict:
    """The kept changes (and the tried ones) against the code before them, each in a fresh process on the same
    documents: wall time of the documents after the first (the first pays compilation and warm-up) and the
    largest relative difference of any log-likelihood from the code before."""
    rows = []
    for model in args.speedup_models:
        runs = {}
        for variant in args.speedup_variants:
            command = [sys.executable, str(RUN), "--speedup-child", model, variant, "--docs",
                       str(args.speedup_docs),
                       "--speedup-k", str(args.speedup_k), "--params", str(args.params), "--device", args.device]
            runs[variant] = run_child(command)
            print(variant, runs[variant], flush=True)
        before = runs.get("before", {})
        for variant, run in runs.items():
            if "failed" in run:
                rows.append({"model": model, "variant": variant, "failed": failure_reason(run["failed"])})
                continue
            rest = sum(run["seconds"][1:]) or sum(run["seconds"])
            row = {"model": model, "variant": variant, "documents": len(run["seconds"]), "k": args.speedup_k,
                   "first document s": run["seconds"][0], "other documents s": rest}
            if "seconds" in before:
                base = sum(before["seconds"][1:]) or sum(before["seconds"])
                row["speed-up"] = base / rest
                row["max relative loglik difference"] = max(
                    abs(a - b) / abs(b) for ours, theirs in zip(run["logliks"], before["logliks"])
                    for a, b in zip(ours, theirs))
            rows.append(row)
    # The models not measured now keep an earlier invocation's rows (each model's rows are against its own "before").
    section = json.loads(args.results.read_text()).get("speedups", {}) if args.results.exists() else {}
    kept = [r for r in section.get("result", {}).get("rows", []) if r["model"] not in args.speedup_models]
    return {"rows": kept + rows, "earlier runs kept": earlier_runs(section, {r["model"] for r in kept}), "goal": "each kept change: bits per byte equal to the code before to 1e-6 relative, "
                                  "its speed-up as a ratio"}
