"""The text corpus: Pile-format documents, split by source document, chunked and stored with `datasets`.

Input is the Pile's JSON-lines format, `{"text": ..., "meta": {"pile_set_name": ...}}`, from local
`.jsonl`/`.jsonl.zst` files, a `datasets` id (the Pile itself where the Hub is reachable), or the offline
mini-Pile assembled from text inside packages (`minipile.py`). The result is an Arrow table on disk, memory-
mapped, so a text is fetched by row id without holding the corpus in RAM.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import StudyConfig

SPLIT_SALT = "tttlm-split-1216"  # 1216 is the shuffle seed of the official evaluation code
BUILD_VERSION = 1  # bump when the way a corpus is built changes, to invalidate caches


# ---------------------------------------------------------------------------------------------- readers
def read_pile_jsonl(path: Path) -> Iterator[dict]:
    """Yield {"text", "meta"} records from a .jsonl or .jsonl.zst file in the Pile's format."""
    path = Path(path)
    if path.suffix == ".zst":
        import zstandard

        stream = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    else:
        stream = open(path, encoding="utf-8")
    with stream:
        for line_no, line in enumerate(stream):
            if line.strip():
                record = json.loads(line)
                if "text" not in record:
                    raise ValueError(f"{path}:{line_no + 1}: a Pile record needs a 'text' field")
                yield record


def _pile_documents(corpus: str, domain_bytes: int) -> Iterator[tuple[str, str, str, dict]]:
    """(domain, source_id, text, provenance) from local Pile files or a `datasets` id, capped per domain."""
    path = Path(corpus)
    files = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.zst"))) if path.is_dir() else []
    if files:
        records = ((f"{f.name}:{i}", r) for f in files for i, r in enumerate(read_pile_jsonl(f)))
    elif path.is_file():
        records = ((f"{path.name}:{i}", r) for i, r in enumerate(read_pile_jsonl(path)))
    else:
        import datasets

        # A datasets id (or a local folder datasets can read). Streaming: the Pile is far larger than a study needs.
        stream = datasets.load_dataset(corpus, split="train", streaming=True)
        records = ((f"{corpus}:{i}", r) for i, r in enumerate(stream))
    used: dict[str, int] = {}
    for source_id, record in records:
        meta = record.get("meta") or {}
        domain = (meta.get("pile_set_name") if isinstance(meta, dict) else None) or "unknown"
        if used.get(domain, 0) >= domain_bytes:
            continue
        text = record["text"] or " "  # the official code replaces empty texts by a space
        used[domain] = used.get(domain, 0) + len(text.encode("utf-8"))
        yield domain, source_id, text, {"source": corpus}


def _minipile_documents(config: StudyConfig, download_dir: Path, provenance: list) -> Iterator:
    from . import minipile

    sources = [s for s in minipile.available_sources() if not config.domains or s.domain in config.domains]
    unknown = sorted(set(config.domains) - {s.domain for s in minipile.SOURCES})
    if unknown:
        raise ValueError(f"invalid domains={list(config.domains)!r}: {unknown} are not mini-Pile domains; valid: "
                         f"{[s.domain for s in minipile.SOURCES]}")
    for source in sources:
        digest, n_docs, n_bytes = hashlib.sha256(), 0, 0
        for source_id, text in source.iter_documents(config.domain_bytes, 0, download_dir):
            digest.update(text.encode("utf-8"))
            n_docs, n_bytes = n_docs + 1, n_bytes + len(text.encode("utf-8"))
            yield source.domain, source_id, text, {"pile_set_name": source.pile_set_name}
        provenance.append({"domain": source.domain, "pile analogue": source.pile_set_name,
                           "origin": source.origin, "package": source.package, "version": source.version(),
                           "license": source.license, "what it is": source.description,
                           "source documents": n_docs, "bytes": n_bytes, "sha256": digest.hexdigest()})


# ---------------------------------------------------------------------------------------------- chunking, split
def chunk_text(text: str, chunk_chars: int | None) -> list[str]:
    """Cut a long text into pieces of about `chunk_chars` characters, at a line break (or space) where one
    falls in the last quarter of the piece, so that code and prose are not cut mid-line."""
    if chunk_chars is None or len(text) <= chunk_chars:
        return [text]
    chunks, start = [], 0
    while start < len(text):
        end = min(start + chunk_chars, len(text))
        if end < len(text):
            lo = start + (3 * chunk_chars) // 4
            cut = text.rfind("\n", lo, end)
            if cut < 0:
                cut = text.rfind(" ", lo, end)
            end = cut + 1 if cut >= 0 else end
        chunks.append(text[start:end])
        start = end
    # A short tail is merged into its predecessor rather than becoming a near-empty document.
    if len(chunks) > 1 and len(chunks[-1]) < chunk_chars // 4:
        tail = chunks.pop()
        chunks[-1] += tail
    return chunks


def _split_rank(domain: str, source_id: str) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}:{domain}:{source_id}".encode()).hexdigest()


def assign_splits(sources_by_domain: dict[str, list[str]], test_fraction: float) -> dict[tuple[str, str], str]:
    """Deterministic train/test split by *source document*: every chunk of a test source is a test chunk, so
    no text of a test document is in the index. Each domain with two or more sources gets at least one of each."""
    split = {}
    for domain, ids in sources_by_domain.items():
        ranked = sorted(ids, key=lambda s: _split_rank(domain, s))
        n_test = min(max(1, round(test_fraction * len(ranked))), len(ranked) - 1) if len(ranked) > 1 else 0
        for i, source_id in enumerate(ranked):
            split[(domain, source_id)] = "test" if i < n_test else "train"
    return split


# ---------------------------------------------------------------------------------------------- the corpus
@dataclass
class Corpus:
    path: Path
    dataset: object  # datasets.Dataset, memory-mapped from `path`
    manifest: dict

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def __len__(self) -> int:
        return len(self.dataset)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.dataset["split"]) == split)

    def texts(self, rows) -> list[str]:
        return self.dataset.select([int(r) for r in rows])["text"]

    def record(self, row: int) -> dict:
        return self.dataset[int(row)]

    @property
    def domains(self) -> list[str]:
        return sorted(self.manifest["documents per domain"])

    def summary(self) -> "pd.DataFrame":
        """Documents and UTF-8 bytes per domain and split, with the Pile task each domain stands in for."""
        import pandas as pd

        table = self.dataset.select_columns(["domain", "split", "text"]).to_pandas()
        table["bytes"] = table["text"].str.encode("utf-8").str.len()
        out = table.pivot_table(index="domain", columns="split", values="bytes", aggfunc=["count", "sum"])
        out.columns = [f"{'documents' if a == 'count' else 'bytes'} ({b})" for a, b in out.columns]
        out.insert(0, "Pile task", [self.manifest["pile_set_name"].get(d, "") for d in out.index])
        return out.fillna(0)

    def test_documents(self, docs_per_domain: int, seed: int, domains=()) -> list[dict]:
        """A seeded sample of test chunks per domain; more documents extend the sample (prefix-stable)."""
        table = self.dataset.select_columns(["domain", "split"]).to_pandas()
        picked = []
        for domain in sorted(set(table["domain"])):
            if domains and domain not in domains:
                continue
            rows = table.index[(table["domain"] == domain) & (table["split"] == "test")].tolist()
            random.Random(f"{seed}:{domain}").shuffle(rows)
            picked += [dict(self.record(r), row=int(r)) for r in rows[:docs_per_domain]]
        return picked


def _corpus_key(config: StudyConfig) -> str:
    from . import minipile

    inputs = {"corpus": config.corpus, "domains": sorted(config.domains), "domain_bytes": config.domain_bytes,
              "chunk_chars": config.chunk_chars, "test_fraction": config.test_fraction, "version": BUILD_VERSION}
    if config.corpus == "minipile":
        inputs["sources"] = [(s.domain, s.version()) for s in minipile.available_sources()]
    elif Path(config.corpus).exists():
        inputs["mtime"] = Path(config.corpus).stat().st_mtime_ns
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def corpus_folder(config: StudyConfig) -> Path:
    name = "minipile" if config.corpus == "minipile" else Path(config.corpus).name.split(".")[0]
    return config.work_path / "corpus" / f"{name}-{_corpus_key(config)}"


def load_corpus(path: Path) -> Corpus:
    import datasets

    manifest = json.loads((path / "manifest.json").read_text())
    dataset = datasets.load_from_disk(str(path / "data"))
    digest = hashlib.sha256()
    for batch in dataset.select_columns(["id", "text"]).iter(batch_size=1000):
        for doc_id, text in zip(batch["id"], batch["text"]):
            digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    if digest.hexdigest()[:16] != manifest["fingerprint"]:
        raise RuntimeError(f"corpus at {path} does not match its manifest fingerprint; delete it to rebuild")
    return Corpus(path, dataset, manifest)


def build_corpus(config: StudyConfig, progress: bool = True) -> Corpus:
    """Build (or load the cached) corpus for `config`."""
    import datasets
    from tqdm import tqdm

    folder = corpus_folder(config)
    if (folder / "manifest.json").exists():
        return load_corpus(folder)
    provenance: list[dict] = []
    if config.corpus == "minipile":
        docs = _minipile_documents(config, config.work_path / "downloads", provenance)
    else:
        docs = _pile_documents(config.corpus, config.domain_bytes)
    collected = list(tqdm(docs, desc="read corpus", unit="doc", disable=not progress))
    if not collected:
        raise ValueError(f"corpus={config.corpus!r} yielded no documents (domains={list(config.domains)}); "
                         "expected 'minipile', Pile-format .jsonl/.jsonl.zst files or a datasets id with text")
    pile_names = {}
    sources_by_domain: dict[str, list[str]] = {}
    for domain, source_id, _, meta in collected:
        sources_by_domain.setdefault(domain, []).append(source_id)
        pile_names[domain] = meta.get("pile_set_name", domain)
    split = assign_splits(sources_by_domain, config.test_fraction)

    columns = {k: [] for k in ("id", "text", "domain", "pile_set_name", "source_id", "chunk", "split")}
    digest = hashlib.sha256()
    for domain, source_id, text, _ in collected:
        for i, piece in enumerate(chunk_text(text, config.chunk_chars)):
            doc_id = f"{domain}/{source_id}#{i}"
            for key, value in zip(columns, (doc_id, piece, domain, pile_names[domain], source_id, i,
                                            split[(domain, source_id)])):
                columns[key].append(value)
            digest.update(doc_id.encode() + b"\0" + piece.encode() + b"\0")
    counts = {}
    for domain, s in zip(columns["domain"], columns["split"]):
        counts.setdefault(domain, {"train": 0, "test": 0})[s] += 1
    manifest = {"corpus": config.corpus, "fingerprint": digest.hexdigest()[:16], "chunk_chars": config.chunk_chars,
                "domain_bytes": config.domain_bytes, "test_fraction": config.test_fraction,
                "documents per domain": counts, "pile_set_name": pile_names, "sources": provenance}
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp / "data"))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a killed build leaves no half corpus behind
    return load_corpus(folder)
