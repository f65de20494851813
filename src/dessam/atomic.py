"""Write files so that a crash never leaves a half-written one behind.

Everything dessam writes goes to a temporary name in the same folder first and is then
renamed into place (`os.replace` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _file_mode() -> int:
    """The permissions `open()` would give a new file: 0o666 less the process's umask (a temporary
    file from `mkstemp` is 0o600, readable by its owner alone)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed to `path`.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, _file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) a killed process left in `folders`.

    Only call this where no other process is writing (e.g. when resuming a run).
    """
    removed = []
    for folder in folders:
        for path in Path(folder).glob(".*.tmp"):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
