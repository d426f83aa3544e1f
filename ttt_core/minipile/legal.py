"""The legal_licenses source, a stand-in for legal prose: the full texts of ~2,600 software and content licences from
ScanCode's licence database (CC-BY-4.0; each licence text under its own terms), read from the wheel of the PyPI
package scancode-toolkit-mini==32.5.0, which `pip download` fetches once into the download folder. One document per
licensedcode/data/licenses/*.LICENSE file with its YAML front matter stripped (id: the file name, e.g.
'mit.LICENSE'); each document is its own content group.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from .base import _decode, _pip_download


_SCANCODE = ("scancode-toolkit-mini==32.5.0", "scancode_toolkit_mini-32.5.0-*.whl")


def _strip_front_matter(text: str) -> str:
    """Drop a leading YAML block delimited by '---' lines."""
    match = re.match(r"---\n.*?\n---\n", text, re.DOTALL)
    return text[match.end() :] if match else text


def _license_docs(download_dir: Path) -> dict[str, str]:
    wheel = _pip_download(_SCANCODE[0], _SCANCODE[1], download_dir)
    docs = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("licensedcode/data/licenses/") and name.endswith(".LICENSE"):
                docs[name.rsplit("/", 1)[1]] = _strip_front_matter(_decode(zf.read(name)))
    return docs
