"""Download of the official files with pooch (HTTPS only, the published hash checked in a staging folder), then
validated and recorded; and :func:`record` for a file copied in by hand.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path

from ..errors import VaesaeError
from ..io import sha256_file
from .files import _record_path, _write_record, _write_stamp, data_root, file_path, validate_file, verify_checksum
from .specs import DatasetSpec, SPECS, resolve_name


# ---------------------------------------------------------------------------------------------
# download (pooch)


_LOOPBACK = {"localhost"}
DOWNLOAD_TIMEOUT = 60.0
"""Seconds the HTTP client waits for the server to answer or send the next block."""


def _check_url(url: str) -> None:
    """HTTPS only; plain HTTP is accepted for a loopback host (tests serve files on 127.0.0.1)."""
    parts = urllib.parse.urlparse(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    loopback = host in _LOOPBACK
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if parts.scheme == "http" and loopback:
        return
    raise VaesaeError(f"refusing to download from {url}: only HTTPS addresses are used")


def _downloader(url: str, progress: bool):
    """The pooch downloader of ``url`` (tests replace this with a local fake)."""
    import pooch

    return pooch.HTTPDownloader(progressbar=progress, timeout=DOWNLOAD_TIMEOUT, chunk_size=1 << 20)


@contextlib.contextmanager
def _quiet_pooch():
    """Pooch logs every download on stderr at INFO; the CLI prints its own single line."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _reason(exc: BaseException) -> str:
    """One short line saying why a transfer failed (requests' messages nest the cause)."""
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    text = str(exc)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _retrieve(name: str, spec: DatasetSpec, url: str, staging: Path, *, progress: bool, fallback: str) -> Path:
    """Fetch ``url`` into ``staging`` with pooch, checked against the published hash; one-line errors."""
    import pooch

    try:
        with _quiet_pooch():
            got = pooch.retrieve(url, known_hash=spec.known_hash, fname=spec.filename, path=staging,
                                 downloader=_downloader(url, progress))
    except ValueError as exc:  # pooch: the file's hash is not the published one (the partial file is removed)
        if "hash" not in str(exc).lower():  # requests' InvalidURL and kin are ValueErrors too
            raise VaesaeError(f"download of {name} from {url} failed ({_reason(exc)}); {fallback}") from None
        alg, _, want = (spec.known_hash or "").partition(":")
        got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
        detail = f"{alg.upper()} {got.group(1)[:16]}... but {want[:16]}... is published" if got else str(exc).split(". ")[0]
        raise VaesaeError(f"the downloaded {name} file is not the published one ({detail}); nothing was installed; {fallback}") from None
    except (OSError, http.client.HTTPException) as exc:  # requests' errors are OSErrors
        if getattr(exc, "errno", None) == errno.ENOSPC:
            raise VaesaeError(f"no space left in {staging.parent} while downloading {name}; free some space and run again") from None
        raise VaesaeError(f"download of {name} from {url} failed ({_reason(exc)}); {fallback}") from None
    return Path(got)


def download(name: str, root: str | os.PathLike | None = None, *, force: bool = False,
             url: str | None = None, progress: bool = False) -> Path:
    """Fetch the official file with pooch, check its published hash, validate it, rename it into
    place and record its SHA-256.

    An existing file that verifies is kept; one that does not is left untouched and reported
    (``force=True`` replaces it with a fresh download). ``url`` overrides the official address
    (HTTPS, or HTTP on a loopback host for tests). The transfer lands in a hidden staging folder
    of the data root that is removed whatever happens; only a file that matches the published
    hash and validates is renamed into place. ``progress`` shows pooch's progress bar.
    """
    name = resolve_name(name)
    spec = SPECS[name]
    root = data_root(root)
    target = root / spec.filename
    fallback = f"load_dataset({name!r}, source='auto') will use the procedural stand-in"
    if target.exists() and not force:
        try:
            verify_checksum(target)
            validate_file(name, target)
        except VaesaeError as exc:
            raise VaesaeError(f"{exc} (or run download with --force to replace it)") from None
        print(f"{name}: {target} is already present and verified", file=sys.stderr)
        return target
    url = url or spec.url
    _check_url(url)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.filename}.", suffix=".part", dir=root))
    except OSError as exc:
        raise VaesaeError(f"cannot write into the data root {root}: {exc.strerror or exc}") from None
    try:
        tmp = _retrieve(name, spec, url, staging, progress=progress, fallback=fallback)
        try:
            validate_file(name, tmp, full=True)
        except VaesaeError as exc:
            raise VaesaeError(f"the downloaded {name} file is not valid ({exc}); nothing was installed; {fallback}") from None
        sha = sha256_file(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # pooch's temporary file is owner-only; a data file is as readable as any other
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise VaesaeError(f"cannot install {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_record(target, sha)
    _write_stamp(target, sha)
    size = target.stat().st_size
    print(f"{name}: saved {target} ({size / 1e6:.1f} MB, SHA-256 {sha})", file=sys.stderr)
    return target


def record(name: str, root: str | os.PathLike | None = None) -> str:
    """Validate a file copied in by hand and record its SHA-256 (if it has no record yet).

    Where the dataset's hash is published (``DatasetSpec.known_hash``) the file must match it.
    """
    name = resolve_name(name)
    path = file_path(name, root)
    if not path.is_file():
        raise VaesaeError(f"{path} does not exist; run `python -m vaesae.data download {name}`")
    if _record_path(path).exists():
        return verify_checksum(path, rehash=True)
    spec = SPECS[name]
    if spec.known_hash:
        import pooch

        alg, _, want = spec.known_hash.partition(":")
        try:
            got = pooch.file_hash(str(path), alg=alg)
        except OSError as exc:
            raise VaesaeError(f"cannot read {path}: {exc.strerror or exc}") from None
        if got != want:
            raise VaesaeError(f"{path} is not the published {name} file ({alg.upper()} {got[:16]}... but the published "
                              f"one is {want[:16]}...); nothing was recorded: delete it and run `python -m vaesae.data download {name}`")
    validate_file(name, path, full=True)
    sha = sha256_file(path)
    _write_record(path, sha)
    _write_stamp(path, sha)
    return sha
