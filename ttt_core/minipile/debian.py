"""The sources read from Debian packages (installed by scripts/install_debian_sources.sh; each one's version is read
from /var/lib/dpkg/status, and it is available only where its files are on disk), with the dpkg helpers they share.
latex: the *.tex/*.dtx sources of the documentation and examples of texlive-latex-base-doc (LPPL-1.3c mostly), the
files taken from dpkg's own list, one document per file (id: its path under /usr/share/doc). glosses_wordnet:
WordNet 3.0's glosses from wordnet-base (WordNet-3.0 licence), 100 synsets per document (id '<pos>/<nnnn>').
linux_docs: the Linux 6.1 kernel's reStructuredText documentation from linux-doc-6.1 (GPL-2.0), one document per
file (id: its path, .gz dropped). fortunes: the fortune-mod quips of the fortunes package (BSD; quotations of mixed
provenance), 40 per document (id '<file>/<nnn>'). jargon_file: The Jargon File 4.4.7 from jargon-text (public
domain), cut at paragraph breaks into ~8 kB pieces (id 'jargon/<nnnn>'). Each document is its own content group.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .base import _chunks, _decode, _group_paragraphs, _read_maybe_gz, _shuffled


# --------------------------------------------------------------------------- Debian sources

_DPKG_STATUS = Path("/var/lib/dpkg/status")
_WORDNET_ROOT = Path("/usr/share/wordnet")
_LINUX_DOC_ROOT = Path("/usr/share/doc/linux-doc-6.1/Documentation")
_FORTUNES_ROOT = Path("/usr/share/games/fortunes")
_JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")


def _dpkg_version(package: str) -> str:
    if not _DPKG_STATUS.exists():
        return ""
    for stanza in _DPKG_STATUS.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M) and "Status: install ok installed" in stanza:
            match = re.search(r"^Version: (\S+)", stanza, re.M)
            return match.group(1) if match else ""
    return ""


def _dpkg_files(package: str) -> list[Path]:
    """Files a Debian package installed, from dpkg's own list (exact, unlike a glob)."""
    info = Path("/var/lib/dpkg/info")
    lists = sorted(info.glob(f"{package}.list")) + sorted(info.glob(f"{package}:*.list"))
    if not lists:
        return []
    return [Path(line) for line in lists[0].read_text(encoding="utf-8", errors="replace").splitlines() if line]


def _debian(package: str, marker: Path) -> dict:
    """available() iff the package's files are on disk; version from dpkg."""
    return dict(origin="debian", package=package, is_available=marker.exists, get_version=lambda: _dpkg_version(package))


# --------------------------------------------------------------------------- latex


def _latex_stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
    files = {
        p.as_posix().removeprefix("/usr/share/doc/").removesuffix(".gz"): p
        for p in _dpkg_files("texlive-latex-base-doc")
        if re.search(r"\.(tex|dtx)(\.gz)?$", p.name) and p.is_file()
    }
    return _shuffled(files, lambda rel: _read_maybe_gz(files[rel]), seed)


def _latex_available() -> bool:
    return any(re.search(r"\.(tex|dtx)(\.gz)?$", p.name) and p.exists() for p in _dpkg_files("texlive-latex-base-doc"))


# --------------------------------------------------------------------------- glosses_wordnet, fortunes, jargon_file


def _wordnet_docs(download_dir: Path) -> dict[str, str]:
    """'lemma (pos): gloss' lines, 100 synsets per document, id = '<pos>/<nnnn>'."""
    docs = {}
    for pos in ("noun", "verb", "adj", "adv"):
        lines = []
        for line in (_WORDNET_ROOT / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:  # licence header / no gloss
                continue
            fields, gloss = line.split(" | ", 1)
            lemma = fields.split()[4].replace("_", " ")
            lines.append(f"{lemma} ({pos}): {gloss.strip()}\n")
        for i, chunk in enumerate(_chunks(lines, 100)):
            docs[f"{pos}/{i:04d}"] = chunk
    return docs


def _fortune_docs(download_dir: Path) -> dict[str, str]:
    """'%'-separated quips, 40 per document, id = '<file>/<nnn>'."""
    docs = {}
    for path in sorted(_FORTUNES_ROOT.iterdir()):
        if path.is_symlink() or not path.is_file() or path.suffix == ".dat":
            continue
        quips = [q.strip("\n") + "\n\n" for q in re.split(r"^%$", _decode(path.read_bytes()), flags=re.M) if q.strip()]
        for i, chunk in enumerate(_chunks(quips, 40)):
            docs[f"{path.name}/{i:03d}"] = chunk
    return docs


def _jargon_docs(download_dir: Path) -> dict[str, str]:
    """The Jargon File cut at paragraph breaks into ~8 kB pieces, id = 'jargon/<nnnn>'."""
    text = _read_maybe_gz(_JARGON_FILE)
    return {f"jargon/{i:04d}": piece for i, piece in enumerate(_group_paragraphs(text, 8000))}
