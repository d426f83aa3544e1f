"""The performance study in one command: every figure as a ratio measured in one process on one machine.

    .venv/bin/python benchmarks/run.py                          # every section (needs `make prepare` first)
    .venv/bin/python benchmarks/run.py --only flops protocol    # some sections; the others keep their results
    .venv/bin/python benchmarks/run.py --quick                  # small sizes, to check the code paths

Each finished section is stored in benchmarks/results.json at once (a crash or kill loses only the section
that was running), and benchmarks/results.md is rendered from it with the machine, the date and the command;
the book's appendix includes that file. Speed goals are measured here, never asserted in tests.

Sections, in the order the report shows them, one module each in benchmarks/sections/ whose docstring says what it
measures and in which units; what several share is in benchmarks/common.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from common import HERE, ROOT, machine
from sections import embed, flops, memory, overheads, protocol, retrieval, retrievers, speedups, threads

RESULTS = HERE / "results.json"
REPORT = HERE / "results.md"
SECTIONS = {"flops": flops, "speedups": speedups, "threads": threads, "protocol": protocol, "overheads": overheads,
            "embed": embed, "retrievers": retrievers, "retrieval": retrieval, "memory": memory}  # the report's order


def table(rows: list[dict], digits: int = 3) -> str:
    if not rows:
        return "(none)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))  # every row's columns (a failed run has "failed")

    def cell(v):  # one line, pipes escaped: a cell never breaks the table
        return f"{v:.{digits}g}" if isinstance(v, float) else " ".join(str(v).split()).replace("|", "\\|")
    return ("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
            + "".join("| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |\n" for r in rows))


def render(results: dict) -> str:
    out = ["# Benchmarks\n", "Measured by `benchmarks/run.py` (every figure a ratio taken in one process on one "
           "machine; speed goals are measured here, never asserted in tests).\n"]
    for name in SECTIONS:
        if name not in results:
            out.append(f"## {name}\n\nNot measured yet: `python benchmarks/run.py --only {name}`.\n")
            continue
        r = results[name]
        out.append(f"## {name}\n\n`{r['command']}` on {r['date']}; machine: "
                   + ", ".join(f"{k} {v}" for k, v in r["machine"].items()) + f".\n\nGoal: {r['result'].get('goal', '')}.\n")
        body = r["result"]
        if "rows" in body:
            out.append(table(body["rows"]))
        # Lists of rows and single rows (a dict, e.g. a mean) each get a table of their own under their name.
        body = {k: v for k, v in body.items() if not k.startswith("_")}  # "_..." keeps raw data, not shown
        tables = {k: ([v] if isinstance(v, dict) else v) for k, v in body.items() if k != "rows" and v and (
            isinstance(v, dict) or (isinstance(v, list) and all(isinstance(x, dict) for x in v)))}
        for key, rows in tables.items():
            out.append(f"{key[:1].upper()}{key[1:]}:\n\n" + table(rows))
        summary = {k: v for k, v in body.items() if k not in ("rows", "goal", *tables)}
        if summary:
            out.append(table([summary]))
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--params", type=Path, default=ROOT / "params" / "study.yml")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--docs", type=int, default=3, help="test documents of the protocol and overheads sections")
    parser.add_argument("--long-docs", type=int, default=1, help="whole-source documents of the protocol section")
    parser.add_argument("--long-bytes", type=int, default=16_000, help="bytes of a whole-source document")
    parser.add_argument("--score-bytes", type=int, nargs="+", default=[1_000, 4_000, 16_000, 64_000],
                        help="document sizes at which the protocol section times one scoring pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embed-chunks", type=int, default=512)
    parser.add_argument("--embed-rounds", type=int, default=2)
    parser.add_argument("--sentence-transformers", type=Path, metavar="DIR",
                        help="a folder holding sentence-transformers (pip install --no-deps --target DIR "
                             "sentence-transformers), for the embed section's comparison")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384, help="the embedder's dimension (MiniLM: 384)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cluster-noise", type=float, nargs="+", default=[0.35, 1.0],
                        help="spreads of the synthetic clusters (retrieval): well separated, and overlapping")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-models", nargs="*", default=["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b",
                                                                  "qwen2.5-coder-1.5b"])
    parser.add_argument("--memory-k", type=int, default=10)
    parser.add_argument("--memory-variants", nargs="+", choices=list(memory.MEMORY_VARIANTS),
                        default=["adamw", "adafactor", "adafactor-file"])
    parser.add_argument("--speedup-models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--speedup-variants", nargs="+", default=["before", "after", "compiled"],
                        help="before: the code before the performance changes (emulated); after: the code as it "
                             "is; compiled: as it is, with torch.compile of the model's forward")
    parser.add_argument("--speedup-k", type=int, default=10)
    parser.add_argument("--speedup-docs", type=int, default=3, help="documents per variant (the first is warm-up)")
    parser.add_argument("--speedup-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--threads-model", default="smollm2-135m")
    parser.add_argument("--threads-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads-barrier", help=argparse.SUPPRESS)
    parser.add_argument("--threads-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the code paths, not the machine")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory.child(args)
    if args.speedup_child:
        return speedups.child(args)
    if args.threads_child:
        return threads.child(args)
    if args.quick:
        args.k, args.docs, args.repeats, args.embed_chunks, args.vectors, args.queries = 3, 1, 1, 32, 20_000, 20
        args.long_bytes, args.score_bytes = 3000, [1000, 3000]
        args.models, args.memory_models, args.memory_k = args.models[:1], args.memory_models[:1], 2
        args.speedup_models, args.speedup_k, args.speedup_docs = args.speedup_models[:1], 2, 2
    for name in args.only:
        print(f"== {name}", flush=True)
        result = SECTIONS[name].run(args)
        # Read again now: another invocation may have finished a section while this one ran.
        results = json.loads(args.results.read_text()) if args.results.exists() else {}
        results[name] = {"result": result, "machine": machine(), "date": datetime.date.today().isoformat(),
                         "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + (argv or sys.argv[1:]))}
        args.results.write_text(json.dumps(results, indent=1, default=float))  # a finished section is kept
        args.results.with_suffix(".md").write_text(render(results))


if __name__ == "__main__":
    main()
