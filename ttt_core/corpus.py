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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import StudyConfig

SPLIT_SALT = "tttlm-split"
# The Pile's `meta.pile_set_name` -> the lm-evaluation-harness task (the key of the Pile weights), as the Pile's
# datasets script pairs them (its config for USPTO is spelt "pile_upsto"). Without it a real Pile's domains
# ("Pile-CC", "USPTO Backgrounds") match no weight and the Pile-weighted aggregate would be a plain mean.
PILE_TASK_OF_SET = {
    "ArXiv": "arxiv", "BookCorpus2": "bookcorpus2", "Books3": "books3", "DM Mathematics": "dm-mathematics",
    "Enron Emails": "enron", "EuroParl": "europarl", "FreeLaw": "freelaw", "Github": "github",
    "Gutenberg (PG-19)": "gutenberg", "HackerNews": "hackernews", "NIH ExPorter": "nih-exporter",
    "OpenSubtitles": "opensubtitles", "OpenWebText2": "openwebtext2", "PhilPapers": "philpapers",
    "Pile-CC": "pile-cc", "PubMed Abstracts": "pubmed-abstracts", "PubMed Central": "pubmed-central",
    "StackExchange": "stackexchange", "USPTO Backgrounds": "uspto", "Ubuntu IRC": "ubuntu-irc",
    "Wikipedia (en)": "wikipedia", "YoutubeSubtitles": "youtubesubtitles",
}
BUILD_VERSION = 2  # 2: byte-bounded chunks, content groups  # bump when the way a corpus is built changes, to invalidate caches


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


def pile_task(record: dict) -> str:
    """A Pile record's domain: its set's lm-eval task name (the 22 Pile sets), any other set name as it is."""
    meta = record.get("meta") or {}
    name = (meta.get("pile_set_name") if isinstance(meta, dict) else None) or "unknown"
    return PILE_TASK_OF_SET.get(name, name)


def _pile_documents(corpus: str, domain_bytes: int) -> Iterator[tuple[str, str, str, str, dict]]:
    """(domain, source_id, content group, text, provenance) from local Pile files or a `datasets` id, capped per domain."""
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
        domain = pile_task(record)
        if used.get(domain, 0) >= domain_bytes:
            continue
        text = record["text"] or " "  # the official code replaces empty texts by a space
        used[domain] = used.get(domain, 0) + len(text.encode("utf-8"))
        yield domain, source_id, source_id, text, {"source": corpus, "pile_set_name": domain}  # its own group


def pile_layout(corpus: str) -> tuple[list[Path], Path] | None:
    """The official Pile layout, `train/00.jsonl.zst ...` beside `test.jsonl.zst` (or `.jsonl`), as (train shards,
    test file); None for any other corpus. The split is then the Pile's own: train shards are indexed, the test
    file is evaluated."""
    path = Path(corpus)
    tests = [path / f"test.{ext}" for ext in ("jsonl.zst", "jsonl") if (path / f"test.{ext}").is_file()]
    if not ((path / "train").is_dir() and tests):
        return None
    shards = sorted(p for p in (path / "train").iterdir() if p.name.endswith((".jsonl", ".jsonl.zst")))
    if not shards:
        raise ValueError(f"invalid corpus={corpus!r}: {path / 'train'} holds no .jsonl or .jsonl.zst shard")
    return shards, tests[0]


def _layout_rows(shards: tuple[str, ...], test_file: str, chunk_bytes: int | None, domain_bytes: int,
                 domains: tuple[str, ...]) -> Iterator[dict]:
    """One row per chunk (a whole document with chunk_bytes=None) of the train shards, then of the test file,
    read one record at a time; `shard` names the train shard a row came from (its index shard)."""
    used: dict[tuple[str, str], int] = {}
    for split, files in (("train", shards), ("test", [test_file])):
        for file in map(Path, files):
            for i, record in enumerate(read_pile_jsonl(file)):
                domain = pile_task(record)
                text = record["text"] or " "  # the official code replaces empty texts by a space
                if (domains and domain not in domains) or used.get((split, domain), 0) >= domain_bytes:
                    continue
                used[(split, domain)] = used.get((split, domain), 0) + len(text.encode("utf-8"))
                source_id = f"{split}/{file.name}:{i}"
                for j, piece in enumerate(chunk_text(text, chunk_bytes)):
                    yield {"id": f"{domain}/{source_id}#{j}", "text": piece, "domain": domain, "pile_set_name": domain,
                           "source_id": source_id, "group": source_id, "chunk": j, "split": split,
                           "shard": file.name.split(".")[0] if split == "train" else ""}


def _build_from_layout(config: StudyConfig, folder: Path, shards: list[Path], test_file: Path,
                       progress: bool) -> "Corpus":
    """The corpus of an official Pile layout, streamed to an Arrow file on disk (never held in memory whole)."""
    import datasets

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    strings = ("id", "text", "domain", "pile_set_name", "source_id", "group", "split", "shard")
    features = datasets.Features({**{k: datasets.Value("string") for k in strings}, "chunk": datasets.Value("int64")})
    if not progress:
        datasets.disable_progress_bars()
    dataset = datasets.Dataset.from_generator(
        _layout_rows, features=features, cache_dir=str(tmp / "cache"),
        # tuples, not lists: datasets would take a list argument for data shards to split among workers
        gen_kwargs={"shards": tuple(str(p) for p in shards), "test_file": str(test_file),
                    "chunk_bytes": config.chunk_bytes, "domain_bytes": config.domain_bytes,
                    "domains": tuple(config.domains)})
    if len(dataset) == 0:
        raise ValueError(f"corpus={config.corpus!r} yielded no documents (domains={list(config.domains)})")
    digest, counts, shard_rows, row = hashlib.sha256(), {}, {}, 0
    for batch in dataset.select_columns(["id", "text", "domain", "split", "shard"]).iter(batch_size=1000):
        for doc_id, text, domain, side, shard in zip(*(batch[c] for c in ("id", "text", "domain", "split", "shard"))):
            digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
            counts.setdefault(domain, {"train": 0, "test": 0})[side] += 1
            if shard:  # train rows come shard after shard: each shard is one range of rows
                shard_rows.setdefault(shard, [row, row])[1] = row + 1
            row += 1
    manifest = {"corpus": config.corpus, "layout": "pile (train shards, test file)", "fingerprint":
                digest.hexdigest()[:16], "rows": row, "chunk_bytes": config.chunk_bytes,
                "domain_bytes": config.domain_bytes, "train_shards": [p.name for p in shards],
                "shard_rows": shard_rows, "test_file": test_file.name,
                "documents per domain": counts, "pile_set_name": {d: d for d in counts}, "sources": []}
    dataset.save_to_disk(str(tmp / "data"))
    shutil.rmtree(tmp / "cache", ignore_errors=True)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a killed build leaves no half corpus behind
    return load_corpus(folder)


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
            yield source.domain, source_id, source.group(source_id), text, {"pile_set_name": source.pile_set_name}
        provenance.append({"domain": source.domain, "pile analogue": source.pile_set_name,
                           "origin": source.origin, "package": source.package, "version": source.version(),
                           "license": source.license, "what it is": source.description,
                           "source documents": n_docs, "bytes": n_bytes, "sha256": digest.hexdigest()})


# ---------------------------------------------------------------------------------------------- chunking, split
def _break_in(data: bytes, lo: int, hi: int, near: int | None = None) -> int:
    """A cut position in data[lo:hi + 1]: after a line break, else after a space (the last one, or the one nearest
    `near`), else at a UTF-8 character boundary; never splits a character (continuation bytes are 0b10xxxxxx)."""
    for sep in (b"\n", b" "):
        if near is None:
            at = data.rfind(sep, lo, hi)
        else:  # the separator nearest `near`, looking both ways
            left, right = data.rfind(sep, lo, near), data.find(sep, near, hi)
            at = min((x for x in (left, right) if x >= 0), key=lambda x: abs(x - near), default=-1)
        if at >= 0:
            return at + 1
    cut = hi if near is None else near
    while cut > lo and 0x80 <= data[cut] < 0xC0:
        cut -= 1
    return cut


def chunk_text(text: str, chunk_bytes: int | None) -> list[str]:
    """Cut a long text into pieces of at most `chunk_bytes` UTF-8 bytes, at a line break (or space) in the last
    quarter of a piece, so that code and prose are not cut mid-line. The bound is in bytes because every tokenizer
    (byte-level BPE, SentencePiece with byte fallback) spends at least one byte per token: a piece of n bytes is
    at most n tokens (+1 for a SentencePiece dummy prefix), so it fits one training step of n + 2 tokens."""
    data = text.encode("utf-8")
    if chunk_bytes is None or len(data) <= chunk_bytes:
        return [text]
    cuts, start = [0], 0
    while len(data) - start > chunk_bytes:
        start = _break_in(data, start + (3 * chunk_bytes) // 4, start + chunk_bytes)
        cuts.append(start)
    # A short tail would be a near-empty document: re-cut the last two pieces near their joint middle instead
    # (both stay within the bound, since together they are at most 1.25 pieces).
    if len(cuts) > 1 and len(data) - cuts[-1] < chunk_bytes // 4:
        lo, middle = cuts[-2], (cuts[-2] + len(data)) // 2
        cut = _break_in(data, len(data) - chunk_bytes, lo + chunk_bytes, near=middle)
        if min(cut - lo, len(data) - cut) < chunk_bytes // 4:  # the nearest break was far from the middle
            cut = middle  # a character boundary at the middle
            while 0x80 <= data[cut] < 0xC0:
                cut -= 1
        cuts[-1] = cut
    bounds = cuts + [len(data)]
    return [data[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:]) if b > a]


def _split_rank(domain: str, group: str, split_seed: int) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}-{split_seed}:{domain}:{group}".encode()).hexdigest()


def assign_splits(groups_by_domain: dict[str, list[str]], test_fraction: float,
                  split_seed: int = 1216) -> dict[tuple[str, str], str]:
    """Deterministic train/test split by *content group* (a source document, or the group of documents that hold
    the same content, such as one page in every language): every chunk of a test group is a test chunk. Each
    domain with two or more groups gets at least one of each. `split_seed` draws another split."""
    split = {}
    for domain, ids in groups_by_domain.items():
        ranked = sorted(set(ids), key=lambda g: _split_rank(domain, g, split_seed))
        n_test = min(max(1, round(test_fraction * len(ranked))), len(ranked) - 1) if len(ranked) > 1 else 0
        for i, group in enumerate(ranked):
            split[(domain, group)] = "test" if i < n_test else "train"
    return split


# ---------------------------------------------------------------------------------------------- the corpus
@dataclass
class Corpus:
    path: Path
    dataset: object  # datasets.Dataset, memory-mapped from `path`
    manifest: dict
    cache: dict = field(default_factory=dict, repr=False)  # derived per-corpus arrays (n-gram overlaps)

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

    def test_documents(self, docs_per_domain: int, seed: int, domains=(), portion: float | None = None,
                       portion_seed: int = 1216) -> list[dict]:
        """A seeded sample of test chunks per domain, from distinct sources first: sources in a seeded order, one
        chunk of each, then a second chunk of each, and so on. More documents extend the sample (prefix-stable).

        With `portion` (the paper: 0.2) the sample is instead the official code's: a domain's test documents in
        corpus order, shuffled by random.Random(portion_seed), the first int(portion * n) kept."""
        table = self.dataset.select_columns(["domain", "split", "source_id"]).to_pandas()
        picked = []
        for domain in sorted(set(table["domain"])):
            if domains and domain not in domains:
                continue
            test = table[(table["domain"] == domain) & (table["split"] == "test")]
            if portion is not None:
                rows = test.index.tolist()
                random.Random(portion_seed).shuffle(rows)  # eval_tttlm.py: shuffle, then the first 20 %
                picked += [dict(self.record(r), row=int(r)) for r in rows[:int(portion * len(rows))]]
                continue
            sources = sorted(set(test["source_id"]))
            random.Random(f"{seed}:{domain}").shuffle(sources)
            chunks = {}
            for source in sources:
                rows = test.index[test["source_id"] == source].tolist()
                random.Random(f"{seed}:{domain}:{source}").shuffle(rows)
                chunks[source] = rows
            order = [chunks[s][i] for i in range(max(map(len, chunks.values()), default=0))
                     for s in sources if i < len(chunks[s])]
            picked += [dict(self.record(r), row=int(r)) for r in order[:docs_per_domain]]
        return picked

    def sources_per_domain(self, split: str = "test") -> "pd.DataFrame":
        """Chunks, source documents and content groups per domain on one side of the split."""
        table = self.dataset.select_columns(["domain", "split", "source_id", "group"]).to_pandas()
        table = table[table["split"] == split]
        return table.groupby("domain").agg(chunks=("source_id", "size"), sources=("source_id", "nunique"),
                                           groups=("group", "nunique"))


def _corpus_key(config: StudyConfig) -> str:
    from . import minipile

    inputs = {"corpus": config.corpus, "domains": sorted(config.domains), "domain_bytes": config.domain_bytes,
              "chunk_bytes": config.chunk_bytes, "test_fraction": config.test_fraction, "split_by": config.split_by,
              "split_seed": config.split_seed, "version": BUILD_VERSION}
    if config.corpus == "minipile":
        inputs["sources"] = [(s.domain, s.version()) for s in minipile.available_sources()]
    else:
        inputs["pile_tasks"] = "lm-eval task names"  # domains renamed by PILE_TASK_OF_SET: older caches are stale
        if Path(config.corpus).exists():
            inputs["mtime"] = Path(config.corpus).stat().st_mtime_ns
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def corpus_folder(config: StudyConfig) -> Path:
    name = "minipile" if config.corpus == "minipile" else Path(config.corpus).name.split(".")[0]
    return config.work_path / "corpus" / f"{name}-{_corpus_key(config)}"


def load_corpus(path: Path) -> Corpus:
    import datasets

    manifest = json.loads((path / "manifest.json").read_text())
    dataset = datasets.load_from_disk(str(path / "data"))
    if "layout" in manifest:  # the Pile: hashed once when built; re-reading a terabyte on every load is not affordable
        if len(dataset) != manifest["rows"]:
            raise RuntimeError(f"corpus at {path} has {len(dataset)} rows, its manifest {manifest['rows']}; "
                               "delete it to rebuild")
        return Corpus(path, dataset, manifest)
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
    layout = pile_layout(config.corpus) if config.corpus != "minipile" else None
    if layout is not None:
        return _build_from_layout(config, folder, *layout, progress)
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
    groups_by_domain: dict[str, list[str]] = {}
    for domain, source_id, group, _, meta in collected:
        # split_by='source' is this study's first split: by file, blind to translations of the same text.
        groups_by_domain.setdefault(domain, []).append(group if config.split_by == "group" else source_id)
        pile_names[domain] = meta.get("pile_set_name", domain)
    split = assign_splits(groups_by_domain, config.test_fraction, config.split_seed)

    columns = {k: [] for k in ("id", "text", "domain", "pile_set_name", "source_id", "group", "chunk", "split")}
    digest = hashlib.sha256()
    for domain, source_id, group, text, _ in collected:
        side = split[(domain, group if config.split_by == "group" else source_id)]
        for i, piece in enumerate(chunk_text(text, config.chunk_bytes)):
            doc_id = f"{domain}/{source_id}#{i}"
            for key, value in zip(columns, (doc_id, piece, domain, pile_names[domain], source_id, group, i, side)):
                columns[key].append(value)
            digest.update(doc_id.encode() + b"\0" + piece.encode() + b"\0")
    counts = {}
    for domain, s in zip(columns["domain"], columns["split"]):
        counts.setdefault(domain, {"train": 0, "test": 0})[s] += 1
    manifest = {"corpus": config.corpus, "fingerprint": digest.hexdigest()[:16], "chunk_bytes": config.chunk_bytes,
                "domain_bytes": config.domain_bytes, "test_fraction": config.test_fraction,
                "split_by": config.split_by, "split_seed": config.split_seed,
                "documents per domain": counts, "pile_set_name": pile_names, "sources": provenance}
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp / "data"))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a killed build leaves no half corpus behind
    return load_corpus(folder)
