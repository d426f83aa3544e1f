"""Atomic writes: a file or folder appears whole or not at all, so a kill mid-write never leaves a half artifact
that a later run would take for a finished one (the study's resume rule)."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
    """Yields an empty `<folder>.tmp` to fill; on success it replaces `folder` (an old one is removed first, the
    rename itself is atomic), on an error it stays for inspection and the next write clears it."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
