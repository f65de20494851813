"""Download Meta's official SAM checkpoints (`dessam fetch-sam`) and find them on disk.

A download goes to ``<file>.part`` next to the final file; an interrupted one is resumed with an
HTTP Range request (a server that answers 200 instead of 206 makes it start over). The finished file
must match Meta's published MD5 and load as the named SAM variant before it is renamed into place,
so a checkpoint under its official name is always complete and usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Optional

import torch
from tqdm import tqdm

from ..errors import DessamError
from ..home import HOME_ENV, dessam_home  # noqa: F401 (HOME_ENV: its old home)
from .checkpoints import read_sam_state_dict
from .sam import build_sam_architecture, check_state_dict

try:  # POSIX only: keeps two processes from appending to the same .part file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

URL_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
URL_BASE_ENV = "DESSAM_SAM_URL_BASE"
SAM_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
# Meta's file names carry the first six hex digits of these digests.
SAM_MD5 = {
    "vit_b": "01ec64d29a2fca3f0661936605ae66f8",
    "vit_l": "0b3195507c641ddb6910d2bb5adee89c",
    "vit_h": "4b8939a88964f0f4ff5f5b2642c598a6",
}
CHUNK = 1 << 20
TIMEOUT_S = 60
MAX_ATTEMPTS = 5  # an attempt that received bytes and then broke off is resumed, up to this many


def default_sam_dir() -> Path:
    """Where checkpoints are downloaded: ``$DESSAM_HOME`` or ``~/.cache/dessam``."""
    return dessam_home()


def sam_file_name(variant: str) -> str:
    """The official file name of SAM `variant` (``vit_b``, ``vit_l`` or ``vit_h``)."""
    if variant not in SAM_FILES:
        raise DessamError(
            f"no official checkpoint for SAM '{variant}': choose one of {', '.join(SAM_FILES)} "
            f"('default' ships with dessam and needs no download)"
        )
    return SAM_FILES[variant]


def sam_url(variant: str) -> str:
    """The download address of SAM `variant` (the base can be changed with ``$DESSAM_SAM_URL_BASE``)."""
    base = os.environ.get(URL_BASE_ENV) or URL_BASE
    return base.rstrip("/") + "/" + sam_file_name(variant)


def find_sam_checkpoint(file_name: str | os.PathLike, extra_dirs: Iterable[str | os.PathLike] = ()) -> Optional[Path]:
    """The first existing `file_name` in `extra_dirs`, the current folder, then `default_sam_dir()`."""
    for folder in [*extra_dirs, Path.cwd(), default_sam_dir()]:
        candidate = Path(folder).expanduser() / file_name
        if candidate.is_file():
            return candidate
    return None


def fetch_sam(
    variant: str,
    directory: Optional[str | os.PathLike] = None,
    url: Optional[str] = None,
    progress: bool = True,
) -> Path:
    """Download SAM `variant` into `directory` (default `default_sam_dir()`) and return its path.

    An existing file that loads as `variant` is returned as it is. `url` replaces the official
    address of the file (a mirror, or a local server in tests).
    """
    name = sam_file_name(variant)
    url = url or sam_url(variant)
    folder = Path(directory).expanduser() if directory is not None else default_sam_dir()
    final = folder / name
    if final.is_file() and _loads_as(final, variant):
        return final
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DessamError(f"{folder}: cannot create the download folder ({exc.strerror}); choose another --dir") from None
    part = folder / (name + ".part")
    with open(part, "ab") as handle, _exclusive(handle, part):
        try:
            _download(url, handle, part, name, progress, hint=f"download it by hand from {url} into {folder}")
        except DessamError:
            if part.stat().st_size == 0:
                part.unlink()
            raise
        _verify(part, variant, url)
    os.replace(part, final)
    return final


def _loads_as(path: Path, variant: str) -> bool:
    try:
        _check_variant(path, variant)
    except DessamError:
        return False
    return True


def _check_variant(path: Path, variant: str) -> None:
    state = read_sam_state_dict(path)
    with torch.device("meta"):  # only key names and shapes are needed: no memory, no initialisation
        expected = build_sam_architecture(variant)
    check_state_dict(expected, state, variant, path)


def _verify(part: Path, variant: str, url: str) -> None:
    """Refuse (and delete) a downloaded file that is not the published checkpoint of `variant`."""
    try:
        expected = SAM_MD5.get(variant)
        actual = _md5(part) if expected else None
        if actual != expected:
            raise DessamError(f"MD5 is {actual}, expected {expected}")
        _check_variant(part, variant)
    except DessamError as exc:
        part.unlink(missing_ok=True)
        raise DessamError(
            f"{url}: the downloaded file is not the SAM {variant} checkpoint ({exc}); it was deleted; "
            f"check the address and run again"
        ) from None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(handle, part: Path):
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DessamError(f"{part}: another process is downloading this file; wait for it to finish") from None
    yield


def _download(url: str, handle, part: Path, name: str, progress: bool, hint: str) -> None:
    """Fill `handle` (the open .part file, append mode) with the whole file at `url`."""
    for attempt in range(MAX_ATTEMPTS):
        start = handle.seek(0, os.SEEK_END)
        try:
            received = _transfer(url, handle, start, name, progress)
        except _Interrupted as exc:
            if exc.received and attempt + 1 < MAX_ATTEMPTS:
                continue  # made progress: resume from where it stopped
            raise DessamError(
                f"{url}: download interrupted ({exc.reason}); run the same command again to resume "
                f"from {part}, or {hint}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise DessamError(f"{url}: cannot download ({_reason(exc)}); check the connection, or {hint}") from None
        if received is not None:
            return
    raise DessamError(f"{url}: the server did not send the whole file after {MAX_ATTEMPTS} tries; {hint}")


class _Interrupted(Exception):
    def __init__(self, reason: str, received: int):
        super().__init__(reason)
        self.reason, self.received = reason, received


def _transfer(url: str, handle, start: int, name: str, progress: bool) -> Optional[int]:
    """One request; returns the bytes received, or None when the caller should ask again."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not start:
            raise
        # Range past the end: either the .part is already complete or it belongs to another file.
        total = _content_range_total(exc.headers.get("Content-Range", ""))
        exc.close()
        if total == start:
            return 0
        handle.truncate(0)
        return None
    with response:
        if start and response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range", ""))
            if first != start:
                handle.truncate(0)  # an answer we cannot append: start over
                return None
        else:  # 200: the whole file, whatever was asked
            handle.truncate(0)
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=name, disable=not progress) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Interrupted(_reason(exc), received) from None
                if not block:
                    break
                _write(handle, block)
                received += len(block)
                bar.update(len(block))
        handle.flush()
        if total is not None and start + received < total:
            raise _Interrupted(f"got {start + received} of {total} bytes", received)
        return received


def _write(handle, block: bytes) -> None:
    try:
        handle.write(block)
    except OSError as exc:
        raise DessamError(f"{handle.name}: cannot write ({exc.strerror or exc}); free some space or use another --dir") from None


def _content_range(header: str) -> tuple[Optional[int], Optional[int]]:
    """(first byte, total size) from ``bytes FIRST-LAST/TOTAL``; None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header)
    if not match:
        return None, None
    return int(match.group(1)), (int(match.group(2)) if match.group(2) != "*" else None)


def _content_range_total(header: str) -> Optional[int]:
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", header)
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
