"""Durable files: a file's sha256, atomic writes flushed to disk, a folder replaced by rename.

Example: ``atomic_write(path, lambda tmp: tmp.write_text("done"))``; ``sha256_file(path)``

Everything alignlab writes that a later run trusts (checkpoints, reference caches, final models,
converted data) goes through here, so that a process killed at any moment leaves either the old
file or the new one, never a half-written one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: str | Path) -> None:
    """Flush one file's data to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_tree(folder: str | Path) -> None:
    """Flush every file under ``folder`` to disk (before the folder is renamed into place)."""
    for item in Path(folder).rglob("*"):
        if item.is_file():
            fsync_file(item)


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, mode: int | None = None) -> None:
    """``write`` a temporary file next to ``path``, flush it, then rename it over ``path``.

    ``mode`` sets the file's permissions (``mkstemp`` creates 0600); None keeps 0600.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        fsync_file(temporary)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) into ``path``, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def shared_file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_dir(temporary: Path, out: Path) -> None:
    """Move the finished folder ``temporary`` to ``out``, replacing any folder there.

    A folder cannot be renamed over a non-empty one, so an existing ``out`` is first renamed
    aside: a crash between the two renames leaves it as a ``.<name>.old-*`` sibling.
    """
    if not out.exists():
        os.replace(temporary, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(temporary, out)
    shutil.rmtree(old, ignore_errors=True)
