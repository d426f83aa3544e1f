"""The two translation sources (EuroParl stand-ins), whose content groups span languages. translations_po: Sphinx's
UI message catalogues (locale/*/LC_MESSAGES/sphinx.po of the installed sphinx, PyPI, BSD-2-Clause; read with babel),
each English message followed by its translation; document '<lang>/<block>' holds block `block` (PO_BLOCK messages
in catalogue order) of one language, and its content group 'messages-<block>' is that block in every language.
multilingual_handbook: The Debian Administrator's Handbook (Debian package debian-handbook, GPL-2.0+ or
CC-BY-SA-3.0; version from dpkg) with its HTML turned into plain text and the page furniture dropped; one document
per page per language (id '<lang>/<page>.html'), grouped as 'page-<page>.html', the page in every language.
"""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from .base import _shuffled


# --------------------------------------------------------------------------- translations_po


def _sphinx_locale_dir() -> Path | None:
    spec = importlib.util.find_spec("sphinx")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "locale"


PO_BLOCK = 25  # messages per translations_po document: block j holds the same messages in every language


def _po_pairs(path: Path) -> dict[str, str]:
    """English msgid -> its translation; untranslated and fuzzy entries are skipped."""
    from babel.messages.pofile import read_po  # babel is a Sphinx dependency

    with path.open("rb") as fh:
        catalog = read_po(fh)
    pairs = {}
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        source = message.id[0] if isinstance(message.id, (tuple, list)) else message.id
        target = message.string[0] if isinstance(message.string, (tuple, list)) else message.string
        if target and target.strip():
            pairs[source] = target
    return pairs


def _po_docs(download_dir: Path) -> dict[str, str]:
    """Sentence-aligned parallel text (the EuroParl stand-in): each English message followed by its translation,
    one blank line between pairs. Document '<lang>/<block>' holds the messages of block `block` of the catalogue
    order, the same messages in every language, so that a block is one content group (`_po_group`) and the same
    English text never sits on both sides of the split."""
    root = _sphinx_locale_dir()
    catalogues = {po.parent.parent.name: _po_pairs(po) for po in sorted(root.glob("*/LC_MESSAGES/sphinx.po"))}
    order = {}
    for pairs in catalogues.values():
        for msgid in pairs:
            order.setdefault(msgid, len(order))
    docs = {}
    for lang, pairs in catalogues.items():
        blocks: dict[int, list[str]] = {}
        for msgid, target in pairs.items():
            blocks.setdefault(order[msgid] // PO_BLOCK, []).append(f"{msgid}\n{target}\n")
        for block, lines in blocks.items():
            docs[f"{lang}/{block:03d}"] = "\n".join(lines)
    return docs


def _po_group(doc_id: str) -> str:
    return "messages-" + doc_id.split("/")[1]


# --------------------------------------------------------------------------- multilingual_handbook

_HANDBOOK_ROOT = Path("/usr/share/doc/debian-handbook/html")


def _handbook_group(doc_id: str) -> str:
    return "page-" + doc_id.split("/", 1)[1]  # '<lang>/<page>.html': the page in every language


class _HTMLText(HTMLParser):
    """HTML -> plain text: block elements become line breaks, navigation is dropped."""

    _BLOCK = {"p", "div", "br", "li", "dt", "dd", "tr", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "title"}
    _SKIP = {"script", "style", "head"}
    _VOID = {"br", "img", "meta", "link", "hr", "input", "area", "base", "col", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, skipped?)

    def _skipping(self) -> bool:
        return any(skip for _, skip in self._stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        # Drop page furniture: the download banner, logo bar, prev/next nav and the TOC.
        skip = (
            tag in self._SKIP
            or attrs.get("id") in ("banner", "title")
            or any(c in ("docnav", "toc") for c in (attrs.get("class") or "").split())
        )
        if tag in self._BLOCK:
            self.parts.append("\n")
        if tag not in self._VOID:
            self._stack.append((tag, skip))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):  # tolerate unclosed tags
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping():
            self.parts.append(data)

    def text(self) -> str:
        text = re.sub(r"[ \t\xa0]+", " ", "".join(self.parts))
        text = re.sub(r" *\n *", "\n", text)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def _html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()


def _handbook_stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
    files = {
        p.relative_to(_HANDBOOK_ROOT).as_posix(): p  # id = "<lang>/<page>.html"
        for p in _HANDBOOK_ROOT.glob("*/*.html")
    }
    return _shuffled(files, lambda rel: _html_to_text(files[rel].read_text(encoding="utf-8", errors="replace")), seed)
