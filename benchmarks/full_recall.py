"""Each CPU retriever's recall@k of exact MiniLM neighbours at every index size up to the whole mini-Pile index,
with exact MiniLM computed on a GPU (issue 22, item 8): MiniLM embeds ~9 chunks/s on the 2-core CPU, so its exact
neighbours over 109,001 chunks are out of reach there; the index-size chapter measures recall at 3 % only.

Three steps, the middle one on a machine with a GPU (it needs only torch, transformers, numpy and this file's
package's `ttt_core/models.py`):

    .venv/bin/python benchmarks/full_recall.py prepare            # here: queries, first-stage candidates, inputs
    python3 benchmarks/full_recall.py device --out DIR             # on the GPU: embed, exact search, re-rank
    .venv/bin/python benchmarks/full_recall.py report DIR           # here: recall, same-domain share -> json

`prepare` builds the default study (params/study.yml: the decontaminated large mini-Pile, minilm-static) and, at
each index size of the index-size chapter (nested shares, as its TTT-NN runs), the static and BM25 top
`candidates` of every query; it writes `.gpu/` (git-ignored): the indexed texts (xz), the rows of each size, the
candidates, and MiniLM's weights stored as float16 and xz-compressed (the fp32 file alone would exceed what a device
call carries, 64 MiB). The device embeds in float32 with those weights through `models.Embedder.encode` (the study's own
pooling: masked mean over the first 256 tokens, normalised), so its vectors differ from the CPU's fp32 ones by the
weights' rounding: `prepare` embeds a seeded sample on the CPU with the original weights and `report` states the
difference (and, with `--cpu-index`, how many of a CPU MiniLM index's exact neighbours the GPU's search finds).
The result lands in benchmarks/full_recall.json with the corpus fingerprint, the static embedder's record, the
settings the rows depend on and the device; the index-size chapter shows it where they match its run.
"""
from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from ttt_core.models import sha256_file  # noqa: E402  (torch and numpy only: it runs on the GPU machine too)
INPUTS = ROOT / ".gpu"  # what the device call carries (git-ignored)
REFERENCE = ROOT / ".gpu-reference.npz"  # the CPU's fp32 vectors of the sample (git-ignored, stays here)
RESULT = HERE / "full_recall.json"
PARAMS = ROOT / "params" / "study.yml"
# The study's settings the measured rows depend on (the corpus itself is named by its fingerprint).
SETTINGS = ("seed", "decontam_threshold", "decontam_ngram", "embed_max_tokens", "rerank_from", "rerank_candidates")
SEP = "\x00"  # between texts in the xz file (no chunk holds a NUL: corpus texts are decoded UTF-8 prose/code)


def prepare(args) -> None:
    import torch
    import yaml
    from safetensors.torch import load_file, save_file

    from ttt_core.__main__ import study_parameters
    from ttt_core.config import StudyConfig
    from ttt_core.models import assemble_packaged, load_embedder
    from ttt_core.retrievers import search_texts
    from ttt_core.static import static_identity
    from ttt_core.study import prepare as prepare_study, vary

    params = yaml.safe_load(PARAMS.read_text())
    config = StudyConfig.from_params(**study_parameters(params))
    fractions = [float(f) for f in str(params["fractions"]).split(",")]
    candidates = args.candidates or config.rerank_candidates
    study = prepare_study(config)
    corpus, full = study.corpus, study.index
    # The index-size chapter's queries: max_queries // domains per domain (04's parameter, default 200).
    chapter_per_domain = max(1, int(params.get("max_queries", 200)) // len(corpus.domains))
    docs = corpus.test_documents(args.queries_per_domain, config.seed)
    queries = [d["text"] for d in docs]
    INPUTS.mkdir(exist_ok=True)
    for old in INPUTS.glob("*"):
        if old.is_file():
            old.unlink()
    arrays = {"index_rows": np.asarray(full.rows, dtype=np.int64),
              "query_domains": np.array([d["domain"] for d in docs]),
              "row_domains": np.asarray(corpus.dataset["domain"])[full.rows],
              "fractions": np.asarray(fractions)}
    # The reference sample: index positions and queries embedded here with the original fp32 weights (below).
    rng = np.random.default_rng(config.seed)
    arrays["sample_positions"] = np.sort(rng.choice(len(full.rows), args.check_rows, replace=False))
    arrays["sample_queries"] = np.sort(rng.choice(len(queries), min(args.check_queries, len(queries)), replace=False))
    timings = {}
    for fraction in fractions:
        tag = f"{fraction:g}"
        dense = vary(study, index_fraction=fraction)
        bm25 = vary(study, index_fraction=fraction, retriever="bm25")
        arrays[f"rows_{tag}"] = np.asarray(dense.index.rows, dtype=np.int64)
        for name, sub in (("static", dense), ("bm25", bm25)):
            start = time.perf_counter()
            _, found = search_texts(sub.index, queries, candidates, sub.embedder, sub.config.embed_max_tokens)
            timings[f"{name} {tag}"] = (time.perf_counter() - start) / len(queries)
            arrays[f"{name}_{tag}"] = found.astype(np.int64)
        print(f"{tag}: {len(dense.index):,} chunks", flush=True)
    np.savez_compressed(INPUTS / "inputs.npz", **arrays)
    texts = list(corpus.texts(full.rows))
    assert not any(SEP in t for t in texts + queries), "a text holds the separator"
    for name, items in (("texts", texts), ("queries", queries)):
        (INPUTS / f"{name}.xz").write_bytes(lzma.compress(SEP.join(items).encode(), preset=9))
    # MiniLM as float16 (the device computes in float32 from these values); the tokenizer files as shipped.
    folder, record = assemble_packaged("minilm", config.work_path / "models")
    model_dir = INPUTS / "minilm"
    model_dir.mkdir(exist_ok=True)
    for path in Path(folder).iterdir():
        if path.is_file() and path.suffix in (".json", ".txt") and path.name != "data_config.json":
            (model_dir / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(Path(folder) / "model.safetensors"))
    half = INPUTS.parent / ".gpu-model.safetensors"
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, str(half))
    # xz takes 45.4 MB to 40.8: with the texts (19.6) that is what lets one call carry it all.
    (model_dir / "model.safetensors.xz").write_bytes(lzma.compress(half.read_bytes(), preset=6))
    carried_sha256 = sha256_file(half)
    half.unlink()
    minilm = load_embedder("minilm", config.work_path, "cpu")
    np.savez_compressed(REFERENCE, rows=minilm.encode([texts[i] for i in arrays["sample_positions"]], None),
                        queries=minilm.encode([queries[i] for i in arrays["sample_queries"]], None))
    manifest = {"corpus_fingerprint": corpus.fingerprint, "indexed": len(full.rows), "queries": len(queries),
                "queries_per_domain": args.queries_per_domain, "chapter_queries_per_domain": chapter_per_domain,
                "candidates": candidates, "first_stages": ["minilm-static", "bm25"], "fractions": fractions,
                "settings": {name: getattr(config, name) for name in SETTINGS},
                "work_path": str(config.work_path),
                "static_embedder": static_identity(config.embedder, config.work_path),
                "minilm": {"packaged sha256": record["sha256"], "carried as": "float16 safetensors",
                           "carried sha256": carried_sha256},
                f"seconds per query at k = {candidates} (CPU)": timings,
                "files": {str(p.relative_to(INPUTS)): sha256_file(p) for p in sorted(INPUTS.rglob("*")) if p.is_file()},
                "reference sha256": sha256_file(REFERENCE)}
    (INPUTS / "manifest.json").write_text(json.dumps(manifest, indent=1))
    size = sum(p.stat().st_size for p in INPUTS.rglob("*") if p.is_file())
    print(f"wrote {INPUTS} ({size / 2**20:.1f} MiB) and the CPU reference {REFERENCE}")


def device(args) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ttt_core.models import Embedder, declared_limit

    manifest = json.loads((INPUTS / "manifest.json").read_text())
    for name, want in manifest["files"].items():
        if sha256_file(INPUTS / name) != want:
            raise SystemExit(f"{INPUTS / name} does not match its manifest")
    import shutil
    import tempfile

    model_dir = Path(tempfile.mkdtemp()) / "minilm"  # removed at the end
    shutil.copytree(INPUTS / "minilm", model_dir, ignore=shutil.ignore_patterns("*.xz"))
    (model_dir / "model.safetensors").write_bytes(lzma.decompress((INPUTS / "minilm" / "model.safetensors.xz")
                                                                  .read_bytes()))
    if sha256_file(model_dir / "model.safetensors") != manifest["minilm"]["carried sha256"]:
        raise SystemExit("the carried MiniLM weights do not match the manifest")
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products as on the CPU
    start = time.perf_counter()
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    limit = declared_limit(model_dir, model.config)  # 256, MiniLM's max_seq_length, as the study embeds
    embedder = Embedder(model, AutoTokenizer.from_pretrained(model_dir), "minilm", dev, True, {}, limit)
    texts = lzma.decompress((INPUTS / "texts.xz").read_bytes()).decode().split(SEP)
    queries = lzma.decompress((INPUTS / "queries.xz").read_bytes()).decode().split(SEP)
    inputs = np.load(INPUTS / "inputs.npz")
    loaded = time.perf_counter()
    if args.limit:  # a dry run of the code paths on a CPU: the other rows stay zero vectors (numbers meaningless)
        vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        vectors[:args.limit] = embedder.encode(texts[:args.limit], None, batch_size=args.batch_size)
    else:
        vectors = embedder.encode(texts, None, batch_size=args.batch_size, progress=True)
    embedded = time.perf_counter()
    query_vectors = embedder.encode(queries, None, batch_size=args.batch_size)
    x = torch.from_numpy(vectors).to(dev)
    q = torch.from_numpy(query_vectors).to(dev)
    index_rows = inputs["index_rows"]
    position = {int(r): i for i, r in enumerate(index_rows)}
    squared = (x * x).sum(1)
    out = {"sample_vectors": vectors[inputs["sample_positions"]], "query_vectors": query_vectors}
    for fraction in inputs["fractions"]:
        tag = f"{fraction:g}"
        members = torch.from_numpy(np.array([position[int(r)] for r in inputs[f"rows_{tag}"]])).to(dev)
        # Exact squared L2 to every member (|q|^2 + |x|^2 - 2 q.x, as faiss's flat L2), the nearest `exact_k`.
        d = (q * q).sum(1, keepdim=True) + squared[members][None] - 2 * q @ x[members].T
        top = torch.topk(d, min(args.exact_k, len(members)), dim=1, largest=False)
        out[f"exact_rows_{tag}"] = index_rows[members.cpu().numpy()[top.indices.cpu().numpy()]]
        out[f"exact_d_{tag}"] = top.values.cpu().numpy()
        # Re-ranking: the union of both first stages' candidates, each at its exact (v - q)^2 as RerankIndex does.
        union = np.concatenate([inputs[f"static_{tag}"], inputs[f"bm25_{tag}"]], axis=1)
        for i, candidates in enumerate(union):  # a row both stages found is one candidate
            _, first = np.unique(candidates, return_index=True)
            repeated = np.ones(len(candidates), dtype=bool)
            repeated[first] = False
            candidates[repeated] = -1
        slots = np.vectorize(lambda r: position.get(int(r), -1))(union)
        v = x[torch.from_numpy(np.maximum(slots, 0)).to(dev)]
        dist = ((v - q[:, None, :]) ** 2).sum(-1).cpu().numpy()
        out[f"rerank_rows_{tag}"] = np.where(slots >= 0, union, -1)
        out[f"rerank_d_{tag}"] = np.where(slots >= 0, dist, np.inf).astype(np.float32)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    done = time.perf_counter()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    np.savez_compressed(Path(args.out) / "device.npz", **out)
    (Path(args.out) / "device.json").write_text(json.dumps({
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else "none (a dry run)", "torch": torch.__version__,
        "transformers": __import__("transformers").__version__, "chunks": len(texts), "queries": len(queries),
        "load seconds": loaded - start, "embed seconds": embedded - loaded,
        "chunks per second": (args.limit or len(texts)) / (embedded - loaded), "search seconds": done - embedded,
        "batch_size": args.batch_size, "limit": args.limit}, indent=1))
    shutil.rmtree(model_dir.parent, ignore_errors=True)
    print(json.dumps(json.loads((Path(args.out) / "device.json").read_text())))


def report(args) -> None:
    from ttt_core.retrievers import _ordered, retrieval_agreement

    manifest = json.loads((INPUTS / "manifest.json").read_text())
    inputs = np.load(INPUTS / "inputs.npz")
    if not (Path(args.device_out) / "device.npz").is_file():
        raise SystemExit(f"no device.npz in {args.device_out}: run `device --out DIR` on the GPU first and pass DIR")
    got = np.load(Path(args.device_out) / "device.npz")
    info = json.loads((Path(args.device_out) / "device.json").read_text())
    if sha256_file(REFERENCE) != manifest["reference sha256"]:
        raise SystemExit(f"{REFERENCE} is not the one prepared with {INPUTS}: run prepare again")
    reference = np.load(REFERENCE)
    k = args.k
    row_domains = dict(zip(inputs["index_rows"].tolist(), inputs["row_domains"].tolist()))
    query_domains = inputs["query_domains"]
    # How far the float16-carried weights move the vectors.
    drift_rows = np.abs(got["sample_vectors"] - reference["rows"]).max()
    sample_queries = got["query_vectors"][inputs["sample_queries"]]
    drift_queries = np.abs(sample_queries - reference["queries"]).max()
    cosine = float(np.min((got["sample_vectors"] * reference["rows"]).sum(1)))
    chapter = _chapter_queries(query_domains, manifest["chapter_queries_per_domain"])
    cpu_check = _cpu_exact_check(args.cpu_index, manifest, inputs, got, chapter, k) if args.cpu_index else None
    rows = []
    for fraction in inputs["fractions"]:
        tag = f"{fraction:g}"
        exact = _ordered(got[f"exact_d_{tag}"], got[f"exact_rows_{tag}"], k)[1]
        found = {"minilm-static": inputs[f"static_{tag}"][:, :k], "bm25": inputs[f"bm25_{tag}"][:, :k],
                 "rerank (static+bm25 → minilm)": _ordered(got[f"rerank_d_{tag}"], got[f"rerank_rows_{tag}"], k)[1]}
        for name, neighbours in found.items():
            agreement = retrieval_agreement(neighbours, exact, query_domains, row_domains)
            first = retrieval_agreement(neighbours[chapter], exact[chapter], query_domains[chapter], row_domains)
            rows.append({"fraction": float(fraction), "indexed chunks": int(len(inputs[f"rows_{tag}"])),
                         "retriever": name, f"recall@{k} of exact minilm": agreement["recall@k"],
                         "same-domain share": agreement["same_domain"],
                         "exact minilm same-domain share": agreement["exact_same_domain"],
                         f"recall@{k} on the chapter queries": first["recall@k"]})
    result = {"what": f"recall@{k} of exact MiniLM neighbours per index size, exact MiniLM on a GPU",
              "command": "benchmarks/full_recall.py prepare / device / report", "k": k,
              "corpus_fingerprint": manifest["corpus_fingerprint"], "queries": manifest["queries"],
              "queries_per_domain": manifest["queries_per_domain"], "candidates": manifest["candidates"],
              "chapter_queries_per_domain": manifest["chapter_queries_per_domain"], "settings": manifest["settings"],
              "static_embedder": manifest["static_embedder"], "minilm": manifest["minilm"], "device": info,
              "weights check": {"max |v_gpu - v_cpu| (index rows)": float(drift_rows),
                                "max |q_gpu - q_cpu| (queries)": float(drift_queries),
                                "min cosine (index rows)": cosine, "against the CPU's exact index": cpu_check,
                                "sample rows": int(len(inputs["sample_positions"])),
                                "sample queries": int(len(inputs["sample_queries"]))},
              "seconds per query (CPU)": next(v for n, v in manifest.items() if n.startswith("seconds per query")),
              "rows": rows}
    # A dry run (`device --limit`) embedded only some rows: its numbers must never replace the measured ones.
    target = RESULT if not info.get("limit") else Path(args.device_out) / "full_recall.dry-run.json"
    from ttt_core.files import atomic_file

    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {target}")
    for r in rows:
        print(f"{r['fraction']:>5g} {r['indexed chunks']:>8,} {r['retriever']:<32} recall@{k} "
              f"{r[f'recall@{k} of exact minilm']:.3f} same-domain {r['same-domain share']:.2f} (exact "
              f"{r['exact minilm same-domain share']:.2f}) on the chapter's queries "
              f"{r[f'recall@{k} on the chapter queries']:.3f}")
    print(json.dumps(result["weights check"]))


def _cpu_exact_check(folder: str, manifest: dict, inputs, got, chapter: np.ndarray, k: int) -> dict:
    """recall@k of the CPU's exact fp32 MiniLM neighbours (a dense index the index-size chapter built, with its
    embeddings) by the GPU's, for the chapter's queries on the same rows: what the float16 weights change."""
    from ttt_core.search import recall_at_k
    from ttt_core.models import load_embedder
    from ttt_core.retrievers import _ordered

    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("corpus_fingerprint") != manifest["corpus_fingerprint"] or meta.get("embedder") != "minilm":
        raise SystemExit(f"{folder} is not a MiniLM index of this corpus")
    tag = f"{float(meta.get('index_fraction', 1.0)):g}"
    if f"rows_{tag}" not in inputs:
        raise SystemExit(f"{folder} indexes {tag} of the train split, a size not measured here")
    rows, vectors = np.load(folder / "rows.npy"), np.load(folder / "embeddings.npy")
    # The folder embeds its share of the train split; the index searched is that share less decontamination.
    keep = np.isin(rows, inputs[f"rows_{tag}"])
    rows, vectors = rows[keep], vectors[keep]
    queries = lzma.decompress((INPUTS / "queries.xz").read_bytes()).decode().split(SEP)
    cpu_queries = load_embedder("minilm", manifest["work_path"], "cpu").encode([queries[i] for i in chapter], None)
    d = (cpu_queries ** 2).sum(1)[:, None] + (vectors ** 2).sum(1)[None] - 2 * cpu_queries @ vectors.T
    cpu = _ordered(d.astype(np.float32), np.broadcast_to(rows, d.shape), k)[1]
    gpu = _ordered(got[f"exact_d_{tag}"][chapter], got[f"exact_rows_{tag}"][chapter], k)[1]
    return {"index size": float(tag), "queries": int(len(chapter)), f"recall@{k}": recall_at_k(gpu, cpu)}


def _chapter_queries(query_domains: np.ndarray, per_domain: int) -> np.ndarray:
    """Positions of the index-size chapter's queries within these: `test_documents` is prefix-stable per domain,
    so its first `per_domain` of each domain are the chapter's (max_queries // domains)."""
    out, seen = [], {}
    for i, d in enumerate(query_domains):
        seen[d] = seen.get(d, 0) + 1
        if seen[d] <= per_domain:
            out.append(i)
    return np.asarray(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--queries-per-domain", type=int, default=100)
    p.add_argument("--candidates", type=int, default=None, help="each first stage's top candidates (default: the "
                   "study's rerank_candidates)")
    p.add_argument("--check-rows", type=int, default=200, help="index rows embedded on the CPU as the reference")
    p.add_argument("--check-queries", type=int, default=50)
    d = sub.add_parser("device")
    d.add_argument("--out", required=True)
    d.add_argument("--batch-size", type=int, default=512)
    d.add_argument("--exact-k", type=int, default=50)
    d.add_argument("--device", default="cuda")
    d.add_argument("--limit", type=int, default=0, help="embed only the first rows (a dry run of the code paths)")
    r = sub.add_parser("report")
    r.add_argument("device_out")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--cpu-index", default=None, help="a dense MiniLM index folder with embeddings.npy (the "
                   "chapter's, at compare_fraction) to check the GPU's exact neighbours against the CPU's")
    args = parser.parse_args(argv)
    {"prepare": prepare, "device": device, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
