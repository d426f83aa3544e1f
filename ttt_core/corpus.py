"""The text corpus: Pile-format documents, split by source document, chunked and stored with `datasets`.

Input is the Pile's JSON-lines format, `{"text": ..., "meta": {"pile_set_name": ...}}`, from local
`.jsonl`/`.jsonl.zst` files, a `datasets` id (the Pile itself where the Hub is reachable), or the offline
mini-Pile assembled from text inside packages (the `minipile` package). The result is an Arrow table on disk, memory-
mapped, so a text is fetched by row id without holding the corpus in RAM.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import StudyConfig, domain_budget
from .files import content_key

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
class _CutShort(Exception):
    """A zstd file that ends inside a frame."""


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file as bytes (the last one without its newline), a .zst file decompressed frame after frame
    (concatenated frames are one valid stream). zstandard's readers return what they have at a cut-off end and say
    nothing, so a frame that is not finished when the file ends raises _CutShort."""
    with open(path, "rb") as f:
        if not path.name.endswith(".zst"):
            yield from f
            return
        import zstandard

        new = zstandard.ZstdDecompressor().decompressobj
        decompressor, in_frame, tail = new(), False, b""
        if not f.peek(1):  # even an empty text compresses to a frame: an empty .zst was cut to nothing
            raise _CutShort("the file is empty, not a zstd stream (it is cut short)")
        while chunk := f.read(1 << 20):
            while chunk:
                out, in_frame = decompressor.decompress(chunk), True
                chunk = b""
                if decompressor.eof:  # the frame is complete; what follows it is the next frame
                    chunk, decompressor, in_frame = decompressor.unused_data, new(), False
                *lines, tail = (tail + out).split(b"\n")
                for line in lines:
                    yield line + b"\n"
        if in_frame:
            raise _CutShort("the file ends inside a zstd frame: it is cut short or damaged (its text stops "
                            f"{'inside' if tail else 'before'} this line)")
        if tail:
            yield tail


def _checked_record(record, where: str) -> dict:
    """A Pile record as every reader yields it: a JSON object with a string `text` (null or empty: the official
    code's " ") and `meta` an object or absent (a JSON object stored as a string, as some exports do, is parsed).
    Raises ValueError naming `where` (file:line) otherwise, also for a text with a lone surrogate (`"\\ud800"` is
    valid JSON but no Unicode text; it would fail later, in the tokenizer or the Arrow writer, naming no file)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a Pile record is a JSON object {{\"text\": ..., \"meta\": {{\"pile_set_name\": "
                         f"...}}}}, not a {type(record).__name__}")
    if "text" not in record:
        raise ValueError(f"{where}: a Pile record needs a 'text' field")
    text = record["text"]
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be a string (or null), not the {type(text).__name__} {text!r:.60}")
    for field_name, value in (("text", text), ("meta.pile_set_name", (record.get("meta") or {}).get("pile_set_name")
                                                    if isinstance(record.get("meta"), dict) else None)):
        if isinstance(value, str):
            try:  # JSON's \ud800 escapes decode to lone surrogates: valid JSON, but no text UTF-8 can hold
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(f"{where}: '{field_name}' is not valid Unicode text ({error.reason}: "
                                 f"{value[error.start]!r} at character {error.start + 1}); expected text that "
                                 "UTF-8 can encode (a lone \\ud800-\\udfff escape is not)") from None
    out = dict(record, text=text or " ")  # the official code replaces empty texts by a space
    meta = record.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            pass
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: 'meta' is a string that holds no JSON object ({record['meta']!r:.60}); "
                             "expected an object such as {\"pile_set_name\": \"Github\"}")
        out["meta"] = meta
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"{where}: 'meta' must be an object such as {{\"pile_set_name\": \"Github\"}}, not the "
                         f"{type(meta).__name__} {meta!r:.60}")
    name = (meta or {}).get("pile_set_name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{where}: 'meta.pile_set_name' must be a string, not the {type(name).__name__} {name!r:.60}")
    return out


def read_pile_jsonl(path: Path) -> Iterator[dict]:
    """Yield {"text", "meta"} records from a .jsonl or .jsonl.zst file in the Pile's format (see _checked_record).

    Raises ValueError "<file>:<line>: ..." for a line that is not UTF-8 or not JSON, a record of the wrong shape, a
    damaged zstd stream or one that ends inside a frame (chained from the decoder's own error)."""
    import zstandard

    path = Path(path)
    lines, at = _raw_lines(path), 0
    try:
        while True:
            at += 1
            try:
                line = next(lines, None)
                if line is None:
                    return
                if not line.strip():
                    continue
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{at}: not UTF-8 text (byte {line[error.start]:#04x} at byte "
                                 f"{error.start + 1} of the line)") from error
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{at}: not a JSON record ({error.msg} at column {error.colno})") from error
            except zstandard.ZstdError as error:
                raise ValueError(f"{path}:{at}: not a readable zstd stream ({error})") from error
            except _CutShort as error:
                raise ValueError(f"{path}:{at}: {error}") from error
            yield _checked_record(record, f"{path}:{at}")
    finally:
        lines.close()  # a reader left early closes its file now, not when collected


READABLE = (".jsonl", ".jsonl.zst")


def _not_data(name: str) -> bool:
    """Entries of a corpus folder that are plainly not corpus files and are passed over: hidden ones ('.DS_Store',
    '.git'), README*, LICENSE*, *.md, *.txt and checksum files (*.sha256, *.md5, SHA256SUMS)."""
    upper = name.upper()
    return (name.startswith(".") or upper.startswith(("README", "LICENSE")) or upper.endswith("SUMS")
            or upper.endswith((".MD", ".TXT", ".SHA256", ".MD5")))


def corpus_files(folder: Path, corpus: str) -> list[Path]:
    """The .jsonl/.jsonl.zst files of a corpus folder, sorted by name (empty where it holds none: the folder is
    then read by `datasets.load_dataset`, as a Hub id is, e.g. a folder of parquet files).

    Raises ValueError naming `corpus` when the folder holds corpus files beside entries it cannot read (another
    extension such as .jsonl.gz or .json, a subfolder): none is skipped silently. Entries that are not data
    (_not_data) are passed over."""
    files, unread = [], []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.name.endswith(READABLE):  # read even where its name looks like a note
            files.append(entry)
        elif not _not_data(entry.name):
            unread.append(entry.name + ("/" if entry.is_dir() else ""))
    if files and unread:
        raise ValueError(f"invalid corpus={corpus!r}: {folder} holds {len(files)} corpus file(s) and entries it "
                         f"cannot read {unread}; it reads .jsonl and .jsonl.zst files (hidden files, README*, "
                         "LICENSE*, *.md, *.txt and checksums are passed over): convert or move the others")
    return files


def _set_name(record: dict) -> str | None:
    """A checked record's `meta.pile_set_name`, None where it has none."""
    return (record.get("meta") or {}).get("pile_set_name") or None


def pile_task(record: dict) -> str:
    """A Pile record's domain: its set's lm-eval task name (the 22 Pile sets), any other set name as it is, and
    'unknown' for a record without a set name (counted and reported by build_corpus)."""
    name = _set_name(record) or "unknown"
    return PILE_TASK_OF_SET.get(name, name)


def _tally(stats: dict, domain: str, size: int, kept: bool) -> None:
    """Count one document read into stats[domain] (documents and UTF-8 bytes read, kept, dropped by the cap)."""
    t = stats.setdefault(domain, {"read": 0, "kept": 0, "dropped": 0, "bytes read": 0, "bytes kept": 0})
    t["read"], t["bytes read"] = t["read"] + 1, t["bytes read"] + size
    if kept:
        t["kept"], t["bytes kept"] = t["kept"] + 1, t["bytes kept"] + size
    else:
        t["dropped"] += 1


def _pile_documents(corpus: str, domain_bytes: int | None, stats: dict) -> Iterator[tuple[str, str, str, str, dict]]:
    """(domain, source_id, content group, text, provenance) from local Pile files or a `datasets` id: every document,
    or with `domain_bytes` those read before a domain's text reached it. Fills `stats` (see _tally), with the
    count of records without a set name under the key None."""
    path = Path(corpus)
    files = corpus_files(path, corpus) if path.is_dir() else []
    if files:
        records = ((f"{f.name}:{i}", r) for f in files for i, r in enumerate(read_pile_jsonl(f)))
    elif path.is_file():
        records = ((f"{path.name}:{i}", r) for i, r in enumerate(read_pile_jsonl(path)))
    else:
        import datasets

        # A datasets id (or a local folder datasets can read). Streaming: the Pile is far larger than a study needs.
        stream = datasets.load_dataset(corpus, split="train", streaming=True)
        records = ((f"{corpus}:{i}", _checked_record(r, f"{corpus}: row {i}")) for i, r in enumerate(stream))
    for source_id, record in records:
        domain, text = pile_task(record), record["text"]
        stats[None] = stats.get(None, 0) + (_set_name(record) is None)
        kept = domain_bytes is None or stats.get(domain, {}).get("bytes kept", 0) < domain_bytes
        _tally(stats, domain, len(text.encode("utf-8")), kept)
        if kept:
            yield domain, source_id, source_id, text, {"source": corpus, "pile_set_name": domain}  # its own group


def pile_layout(corpus: str) -> tuple[list[Path], Path] | None:
    """The official Pile layout, `train/00.jsonl.zst ...` beside `test.jsonl.zst` (or `.jsonl`), as (train shards,
    test file); None for any other corpus. The split is then the Pile's own: train shards are indexed, the test
    file is evaluated."""
    path = Path(corpus)
    tests = [path / f"test.{ext}" for ext in ("jsonl.zst", "jsonl") if (path / f"test.{ext}").is_file()]
    if not ((path / "train").is_dir() and tests):
        return None
    shards = corpus_files(path / "train", corpus)
    if not shards:
        raise ValueError(f"invalid corpus={corpus!r}: {path / 'train'} holds no .jsonl or .jsonl.zst shard")
    return shards, tests[0]


def _layout_rows(shards: tuple[str, ...], test_file: str, chunk_bytes: int | None, domain_bytes: int | None,
                 stats_path: str) -> Iterator[dict]:
    """One row per chunk (a whole document with chunk_bytes=None) of the train shards, then of the test file,
    read one record at a time; `shard` names the train shard a row came from (its index shard). With
    `domain_bytes`, each side of the split keeps a domain's documents until their text reaches it. What was read,
    kept and dropped per domain goes to `stats_path` as JSON (the generator runs inside datasets)."""
    stats: dict = {"train": {}, "test": {}}
    unnamed = 0
    for split, files in (("train", shards), ("test", [test_file])):
        for file in map(Path, files):
            for i, record in enumerate(read_pile_jsonl(file)):
                domain, text = pile_task(record), record["text"]
                unnamed += _set_name(record) is None
                kept = domain_bytes is None or stats[split].get(domain, {}).get("bytes kept", 0) < domain_bytes
                _tally(stats[split], domain, len(text.encode("utf-8")), kept)
                if not kept:
                    continue
                source_id = f"{split}/{file.name}:{i}"
                for j, piece in enumerate(chunk_text(text, chunk_bytes)):
                    yield {"id": f"{domain}/{source_id}#{j}", "text": piece, "domain": domain, "pile_set_name": domain,
                           "source_id": source_id, "group": source_id, "chunk": j, "split": split,
                           "shard": file.name.split(".")[0] if split == "train" else ""}
    Path(stats_path).write_text(json.dumps({"stats": stats, "unnamed": unnamed}))


def _build_from_layout(config: StudyConfig, folder: Path, shards: list[Path], test_file: Path,
                       progress: bool) -> "Corpus":
    """The corpus of an official Pile layout, streamed to an Arrow file on disk (never held in memory whole)."""
    import datasets

    from .files import atomic_folder

    with atomic_folder(folder) as tmp:  # a killed build leaves no half corpus behind
        strings = ("id", "text", "domain", "pile_set_name", "source_id", "group", "split", "shard")
        features = datasets.Features({**{k: datasets.Value("string") for k in strings},
                                      "chunk": datasets.Value("int64")})
        if not progress:
            datasets.disable_progress_bars()
        try:
            dataset = datasets.Dataset.from_generator(
                _layout_rows, features=features, cache_dir=str(tmp / "cache"),
                # tuples, not lists: datasets would take a list argument for data shards to split among workers
                gen_kwargs={"shards": tuple(str(p) for p in shards), "test_file": str(test_file),
                            "chunk_bytes": config.chunk_bytes, "domain_bytes": domain_budget(config),
                            "stats_path": str(tmp / "stats.json")})
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error.__cause__
            if isinstance(cause, ValueError):  # a damaged input file: its file:line error, not datasets' wrapper
                raise cause from cause.__cause__
            raise
        if len(dataset) == 0:
            raise ValueError(f"corpus={config.corpus!r} yielded no documents")
        read = json.loads((tmp / "stats.json").read_text())
        digest, counts, shard_rows, row = hashlib.sha256(), {}, {}, 0
        for batch in dataset.select_columns(["id", "text", "domain", "split", "shard"]).iter(batch_size=1000):
            columns = (batch[c] for c in ("id", "text", "domain", "split", "shard"))
            for doc_id, text, domain, side, shard in zip(*columns):
                digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
                counts.setdefault(domain, {"train": 0, "test": 0})[side] += 1
                if shard:  # train rows come shard after shard: each shard is one range of rows
                    shard_rows.setdefault(shard, [row, row])[1] = row + 1
                row += 1
        manifest = {"corpus": config.corpus, "layout": "pile (train shards, test file)", "fingerprint":
                    digest.hexdigest()[:16], "rows": row, "chunk_bytes": config.chunk_bytes,
                    "domain_bytes": domain_budget(config), "train_shards": [p.name for p in shards],
                    "shard_rows": shard_rows, "test_file": test_file.name,
                    "documents per domain": counts, "pile_set_name": {d: d for d in counts}, "sources": [],
                    "documents read": _merged(read["stats"]), "records without pile_set_name": read["unnamed"]}
        dataset.save_to_disk(str(tmp / "data"))
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return load_corpus(folder)


def _merged(per_split: dict) -> dict:
    """Per-domain read/kept/dropped counts summed over the sides of the split."""
    out: dict = {}
    for stats in per_split.values():
        for domain, t in stats.items():
            for key, n in t.items():
                out.setdefault(domain, dict.fromkeys(t, 0))[key] += n
    return out


def _check_minipile_domains(config: StudyConfig) -> None:
    """Names the mini-Pile can never hold fail before it is built (prepare() checks them against the corpus)."""
    from . import minipile

    unknown = sorted(set(config.domains) - {s.domain for s in minipile.SOURCES})
    if unknown:
        raise ValueError(f"invalid domains={list(config.domains)!r}: {unknown} are not mini-Pile domains; valid: "
                         f"{[s.domain for s in minipile.SOURCES]}")


def _binding_caps(config: StudyConfig) -> dict[str, int]:
    """The mini-Pile sources whose own cap (TextSource.max_bytes) is below the domain budget, with that cap."""
    from . import minipile

    budget = domain_budget(config)
    return {s.domain: s.max_bytes for s in minipile.available_sources() if s.budget(budget) < budget}


def _build_minipile(config: StudyConfig, folder: Path, progress: bool) -> "Corpus":
    """The mini-Pile built one source (= domain) at a time: a source's documents are read up to its budget,
    split (assign_splits is per domain), chunked and written as one shard under `<folder>.tmp/shards`, marked
    finished by its done.json; a killed build resumes from its finished shards (the .tmp folder is named by the
    corpus key, so they are of this very corpus). The shards are then concatenated in source order: the rows, their
    order and the fingerprint of a build that held every document at once, with about one domain's text in memory.
    Raises ValueError where no source yields a document."""
    import datasets

    from . import minipile

    tmp = folder.with_name(folder.name + ".tmp")
    finished = []
    for index, source in enumerate(minipile.available_sources()):
        shard = tmp / "shards" / f"{index:02d}-{source.domain}"
        if not (shard / "done.json").exists():
            _write_minipile_shard(config, source, shard, progress)
        finished.append((shard, json.loads((shard / "done.json").read_text())))
    parts = [datasets.load_from_disk(str(shard / "data")) for shard, done in finished if done["rows"]]
    if not parts:
        raise ValueError("corpus='minipile' yielded no documents: no available source gave a document of "
                         f"{minipile.MIN_CHARS} characters or more")
    shutil.rmtree(tmp / "data", ignore_errors=True)  # a final copy a killed build left half written
    dataset = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if not progress:
        datasets.disable_progress_bars()
    dataset.save_to_disk(str(tmp / "data"))
    digest = hashlib.sha256()
    for batch in dataset.select_columns(["id", "text"]).iter(batch_size=1000):
        for doc_id, text in zip(batch["id"], batch["text"]):
            digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    manifest = {"corpus": config.corpus, "fingerprint": digest.hexdigest()[:16], "chunk_bytes": config.chunk_bytes,
                "domain_bytes": domain_budget(config), "test_fraction": config.test_fraction,
                "split_by": config.split_by, "split_seed": config.split_seed,
                "documents per domain": {d["domain"]: d["counts"] for _, d in finished if d["rows"]},
                "pile_set_name": {d["domain"]: d["pile_set_name"] for _, d in finished if d["rows"]},
                "sources": [d["provenance"] for _, d in finished]}
    del dataset, parts  # memory maps of the shards, deleted next
    # Renamed first: a kill while deleting must not leave a shard marked done beside half its data.
    shutil.rmtree(tmp / "shards.deleting", ignore_errors=True)  # left by a kill during an earlier deletion
    (tmp / "shards").rename(tmp / "shards.deleting")
    shutil.rmtree(tmp / "shards.deleting")
    return _finish(tmp, folder, manifest)


def _write_minipile_shard(config: StudyConfig, source, shard: Path, progress: bool) -> None:
    """One source's rows as a `datasets` folder shard/data, then shard/done.json (rows, train/test counts, the
    Pile set name, the provenance entry of the manifest's `sources`) written last, by rename, to mark it finished."""
    import datasets
    from tqdm import tqdm

    shutil.rmtree(shard, ignore_errors=True)  # what a killed build left of an unfinished shard
    shard.mkdir(parents=True)
    budget = source.budget(domain_budget(config))
    digest, n_bytes, docs = hashlib.sha256(), 0, []
    with tqdm(total=budget, desc=f"read {source.domain}", unit="B", unit_scale=True, disable=not progress) as bar:
        for source_id, text in source.iter_documents(budget, 0, config.work_path / "downloads"):
            data = text.encode("utf-8")
            digest.update(data)
            n_bytes += len(data)
            bar.update(len(data))
            # split_by='source' is this study's first split: by file, blind to translations of the same text.
            docs.append((source_id, source.group(source_id), text))
    unit = (lambda source_id, group: group) if config.split_by == "group" else (lambda source_id, group: source_id)
    split = assign_splits({source.domain: [unit(i, g) for i, g, _ in docs]}, config.test_fraction, config.split_seed)
    columns = {k: [] for k in ("id", "text", "domain", "pile_set_name", "source_id", "group", "chunk", "split")}
    counts = {"train": 0, "test": 0}
    for source_id, group, text in docs:
        side = split[(source.domain, unit(source_id, group))]
        for i, piece in enumerate(chunk_text(text, config.chunk_bytes)):
            for key, value in zip(columns, (f"{source.domain}/{source_id}#{i}", piece, source.domain,
                                            source.pile_set_name, source_id, group, i, side)):
                columns[key].append(value)
            counts[side] += 1
    if docs:
        datasets.Dataset.from_dict(columns).save_to_disk(str(shard / "data"))
    done = {"domain": source.domain, "rows": len(columns["id"]), "counts": counts,
            "pile_set_name": source.pile_set_name,
            "provenance": {"domain": source.domain, "pile analogue": source.pile_set_name, "origin": source.origin,
                           "package": source.package, "version": source.version(), "license": source.license,
                           "what it is": source.description, "source documents": len(docs), "bytes": n_bytes,
                           "sha256": digest.hexdigest(), "max_bytes": source.max_bytes,
                           "max_bytes_why": source.max_bytes_why}}
    (shard / "done.json.part").write_text(json.dumps(done, indent=1))
    (shard / "done.json.part").rename(shard / "done.json")


BUILD_RECORD = "build.json"


def peak_rss_mb() -> int:
    """Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in kB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def build_record(corpus: "Corpus") -> dict:
    """{'seconds', 'peak_rss_mb'} of the run that built `corpus`, or {} for a corpus built before it was kept."""
    path = Path(corpus.path) / BUILD_RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def _finish(tmp: Path, folder: Path, manifest: dict) -> "Corpus":
    """Write the manifest into the built folder `tmp` and move it to `folder` (atomic: a killed build leaves no half
    corpus behind)."""
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return load_corpus(folder)


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
    """A built corpus: one row per chunk (or whole document) with columns id, text, domain, pile_set_name, split
    ('train' or 'test'), group (content group) and source_id, memory-mapped from `path`/data (an Arrow dataset);
    `manifest` records how it was built (sources, caps, fingerprint). Rows are integers into `dataset`."""
    path: Path
    dataset: object  # datasets.Dataset, memory-mapped from `path`
    manifest: dict
    cache: dict = field(default_factory=dict, repr=False)  # derived per-corpus arrays (n-gram overlaps)

    @property
    def fingerprint(self) -> str:
        """The content hash of this corpus (its manifest's `fingerprint`, 16 hex digits): part of every run key."""
        return self.manifest["fingerprint"]

    def __len__(self) -> int:
        return len(self.dataset)

    def rows(self, split: str) -> np.ndarray:
        """Row numbers (int64, ascending) of `split` ('train' or 'test')."""
        return np.flatnonzero(np.asarray(self.dataset["split"]) == split)

    def texts(self, rows) -> list[str]:
        """The texts of `rows`, in that order."""
        return self.dataset.select([int(r) for r in rows])["text"]

    def record(self, row: int) -> dict:
        """Chunk `row` as stored: text, domain, doc_id, split and the dataset's other columns; IndexError past the
        end."""
        return self.dataset[int(row)]

    @property
    def domains(self) -> list[str]:
        """The corpus's domain names, sorted (every domain with documents, in any split)."""
        return sorted(self.manifest["documents per domain"])

    def check_domains(self, domains) -> None:
        """Raise ValueError unless every name in `domains` (the test documents' domains; empty: all) is a domain of
        this corpus and one of them at least has test documents; the message names the closest domain and lists
        them all, or the domains that have test documents."""
        for name in domains:
            if name not in self.domains:
                close = difflib.get_close_matches(name, self.domains, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"invalid domains={list(domains)!r}: {name!r} is not a domain of this corpus{hint}; "
                                 f"its domains: {self.domains}")
        tests = {d: c["test"] for d, c in self.manifest["documents per domain"].items()}
        if not any(tests[d] for d in (domains or self.domains)):
            have = sorted(d for d, n in tests.items() if n)
            raise ValueError(f"invalid domains={list(domains)!r}: no test documents in {sorted(domains or tests)} "
                             "(a domain of one source document cannot be split); domains with test documents: "
                             f"{have}")

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
        """A seeded sample of test chunks per domain of `domains` (empty: every domain), from distinct sources
        first: sources in a seeded order, one chunk of each, then a second chunk of each, and so on. More documents
        extend the sample (prefix-stable). A domain with fewer test chunks than `docs_per_domain` gives all it has,
        with a UserWarning naming it; a name that is not a domain raises ValueError (check_domains).

        With `portion` (the paper: 0.2) the sample is instead the official code's: a domain's test documents in
        corpus order, shuffled by random.Random(portion_seed), the first int(portion * n) kept (not rounded up, as
        the official code); a domain that keeps none is named in one UserWarning, and ValueError where no domain
        keeps any. Each warning is given once per corpus. Raises ValueError where the selected domains have no test
        documents (check_domains)."""
        self.check_domains(domains)
        table = self.dataset.select_columns(["domain", "split", "source_id"]).to_pandas()
        picked, short, emptied = [], [], []
        for domain in sorted(set(table["domain"])):
            if domains and domain not in domains:
                continue
            test = table[(table["domain"] == domain) & (table["split"] == "test")]
            if portion is not None:
                rows = test.index.tolist()
                random.Random(portion_seed).shuffle(rows)  # eval_tttlm.py: shuffle, then the first 20 %
                picked += [dict(self.record(r), row=int(r)) for r in rows[:int(portion * len(rows))]]
                if rows and not int(portion * len(rows)):
                    emptied.append(f"{domain!r} ({len(rows)} test documents)")
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
            if len(order) < docs_per_domain:
                short.append(f"{domain!r} has {len(order)}")
        said = self.cache.setdefault("warned", set())  # once per corpus: a study asks for its documents again
        for message in ([f"docs_per_domain={docs_per_domain} asks for more test documents than {len(short)} "
                         f"domain(s) hold: {', '.join(short)}; each gives what it has"] if short else []) + (
                [f"test_portion={portion} keeps int({portion} * n) = 0 test documents of {len(emptied)} domain(s): "
                 f"{', '.join(emptied)}; the official rule (eval_tttlm.py) is kept, so they are not evaluated"]
                if emptied else []):
            if message not in said:
                said.add(message)
                warnings.warn(message, stacklevel=2)
        if not picked and portion is not None:  # (without it, check_domains made sure of one)
            raise ValueError(f"invalid test_portion={portion}: it keeps no test document of "
                             f"domains={list(domains)!r}: {', '.join(emptied)}")
        return picked

    def sources_per_domain(self, split: str = "test") -> "pd.DataFrame":
        """Chunks, source documents and content groups per domain on one side of the split."""
        table = self.dataset.select_columns(["domain", "split", "source_id", "group"]).to_pandas()
        table = table[table["split"] == split]
        return table.groupby("domain").agg(chunks=("source_id", "size"), sources=("source_id", "nunique"),
                                           groups=("group", "nunique"))


def _corpus_key(config: StudyConfig) -> str:
    from . import minipile

    # The corpus holds every domain whatever `domains` (it picks test documents only); the empty list stays in the
    # key so that caches built before keep their names. domain_bytes as resolved: the mini-Pile's default and an
    # explicit 250,000 are one corpus.
    inputs = {"corpus": config.corpus, "domains": [], "domain_bytes": domain_budget(config),
              "chunk_bytes": config.chunk_bytes, "test_fraction": config.test_fraction, "split_by": config.split_by,
              "split_seed": config.split_seed, "version": BUILD_VERSION}
    if config.corpus == "minipile":
        inputs["sources"] = [(s.domain, s.version()) for s in minipile.available_sources()]
        caps = _binding_caps(config)
        if caps:  # only where a cap binds: a corpus no cap touches (the default mini-Pile) keeps its key
            inputs["source caps"] = caps
    else:
        inputs["pile_tasks"] = "lm-eval task names"  # domains renamed by PILE_TASK_OF_SET: older caches are stale
        inputs["reader"] = 2  # 2: a meta stored as a JSON string is parsed, read counts kept: older caches are stale
        inputs["files"] = _input_files(config.corpus)
    return content_key(inputs, 12)


def _input_files(corpus: str) -> list | None:
    """What the cache key knows of a local corpus's files (None for a datasets id): a file, or a folder's corpus
    files, by name and sha256 of its content, since a file rewritten in place leaves its folder's mtime alone and
    `cp -p`/`rsync -t` put a file's own mtime back (user corpora are small: reading them is cheap next to
    embedding them). The Pile layout (terabytes) and a folder read by datasets: every file by (name, size,
    mtime_ns), as hashing them on every run is not affordable; a layout corpus's row count is checked on load."""
    from .models import sha256_file

    path = Path(corpus)
    if path.is_file():
        return [(path.name, sha256_file(path))]
    if not path.is_dir():
        return None
    layout = pile_layout(corpus)
    files = corpus_files(path, corpus) if layout is None else []
    if files:
        return [(f.name, sha256_file(f)) for f in files]
    listed = [*layout[0], layout[1]] if layout else sorted(p for p in path.rglob("*") if p.is_file())
    return [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in listed]


def corpus_folder(config: StudyConfig) -> Path:
    """Where `config`'s corpus is built: work_path/corpus/<name>-<key of everything that changes its rows>."""
    name = "minipile" if config.corpus == "minipile" else Path(config.corpus).name.split(".")[0]
    return config.work_path / "corpus" / f"{name}-{_corpus_key(config)}"


def load_corpus(path: Path) -> Corpus:
    """The corpus built at `path`, its fingerprint checked against its manifest (a built Pile: its row count).
    RuntimeError, naming the folder, when they differ (delete it to rebuild)."""
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


def _report_reading(manifest: dict) -> None:
    """Warn where a domain_bytes cap dropped documents (per domain: read, kept, dropped) and where records had no
    set name (the domain 'unknown'); silent for a corpus read whole."""
    cut = {d: t for d, t in manifest.get("documents read", {}).items() if t["dropped"]}
    if cut:
        warnings.warn(f"domain_bytes={manifest['domain_bytes']} cut corpus={manifest['corpus']!r}: " + "; ".join(
            f"{d}: read {t['read']}, kept {t['kept']}, dropped {t['dropped']} ({t['bytes kept']:,} of "
            f"{t['bytes read']:,} bytes kept)" for d, t in sorted(cut.items())) +
            " (domain_bytes=None reads every document)", stacklevel=3)
    if manifest.get("records without pile_set_name"):
        warnings.warn(f"{manifest['records without pile_set_name']} records have no meta.pile_set_name: they form "
                      f"the domain 'unknown' of corpus={manifest['corpus']!r}", stacklevel=3)


def build_corpus(config: StudyConfig, progress: bool = True) -> Corpus:
    """Build (or load the cached) corpus for `config`: every domain of the corpus (`domains` picks test documents
    only), each read whole or up to domain_budget(config). Warns where a cap dropped documents."""
    if config.corpus == "minipile":
        _check_minipile_domains(config)
    folder = corpus_folder(config)
    if (folder / "manifest.json").exists():
        corpus = load_corpus(folder)
    else:
        start = time.perf_counter()
        corpus = _build(config, folder, progress)
        # What the build cost, beside the corpus (not in its manifest or fingerprint): a resumed build counts only
        # the run that finished it; peak memory is the building process's, an upper bound of the build's own.
        (folder / BUILD_RECORD).write_text(json.dumps({
            "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": peak_rss_mb()}, indent=1))
    _report_reading(corpus.manifest)
    return corpus


def _build(config: StudyConfig, folder: Path, progress: bool) -> Corpus:
    import datasets
    from tqdm import tqdm

    layout = pile_layout(config.corpus) if config.corpus != "minipile" else None
    if layout is not None:
        return _build_from_layout(config, folder, *layout, progress)
    if config.corpus == "minipile":
        return _build_minipile(config, folder, progress)
    stats: dict = {}
    docs = _pile_documents(config.corpus, domain_budget(config), stats)
    collected = list(tqdm(docs, desc="read corpus", unit="doc", disable=not progress))
    if not collected:
        raise ValueError(f"corpus={config.corpus!r} yielded no documents; "
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
    unnamed = stats.pop(None, 0)
    counts = {}
    for domain, s in zip(columns["domain"], columns["split"]):
        counts.setdefault(domain, {"train": 0, "test": 0})[s] += 1
    manifest = {"corpus": config.corpus, "fingerprint": digest.hexdigest()[:16], "chunk_bytes": config.chunk_bytes,
                "domain_bytes": domain_budget(config), "test_fraction": config.test_fraction,
                "split_by": config.split_by, "split_seed": config.split_seed,
                "documents per domain": counts, "pile_set_name": pile_names, "sources": [],
                "documents read": stats, "records without pile_set_name": unnamed}
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp / "data"))
    return _finish(tmp, folder, manifest)
