"""Atomic writes: a file or folder appears whole or not at all, so a kill mid-write never leaves a half artifact
that a later run would take for a finished one (the study's resume rule); the sha256 a file is named by; the content
key every result and cache is named by."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def content_key(value, digits: int = 16) -> str:
    """The first `digits` hex digits of the sha256 of `value` as JSON with sorted keys: how every run key, results
    file, cache folder and fingerprint here is named by everything that went into it (as `datasets` fingerprints
    its caches), so equal inputs find the same name and any changed input a new one. TypeError for a value JSON
    cannot hold."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:digits]


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yields a fresh temporary path beside `path` to write; on success it replaces `path` atomically (readable by
    other users: mkstemp's 0600 would hide it in a shared artifacts folder), on an error it is removed. Every
    writer has a file of its own, processes and threads alike: the last writer wins and none loses its file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_folder(folder: Path | str) -> Iterator[Path]:
    """Yields a fresh empty folder beside `folder` (`<name>.<random>.tmp`, one per writer, so two processes
    building the same artifact never delete each other's work) to fill; on success it replaces `folder` (an old
    one is removed first, then the atomic rename: a reader in between finds none and builds it), on an error it
    is removed. A build that must resume after a kill keeps a fixed folder of its own instead (the mini-Pile's
    shards, `corpus._build_minipile`)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from other users of a shared artifacts folder
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():  # else another writer's rename came between: its folder is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file's bytes, hex, read in `chunk`-byte blocks (a multi-GB model never held whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
