"""Safe file input/output and provenance.

Every result and checkpoint is written to a temporary file in the target directory and
renamed into place (``os.replace`` is atomic on POSIX), so a reader never sees a half-written
file. Arrays are stored as ``.npz`` and read with ``allow_pickle=False``; checkpoints are read
with ``torch.load(weights_only=True)``. :func:`provenance` is the record that travels with
every result: profile, dataset, data source, seed, git commit, parameters.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import VaesaeError

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(path: str | os.PathLike) -> Path:
    """The one rule for a path taken from a parameter (a notebook's ``results_dir``/``figures_dir``, a
    function's argument, a command-line option): relative means relative to the repository root, for
    reading and writing alike, whatever the working directory (Jupyter runs a notebook in
    ``notebooks/``, the pipeline in the repository root); an absolute path (or ``~/...``) is taken as it is."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _describe_os_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}; free some space and run again (earlier results are unchanged)"
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write {path}: the directory is read-only or not writable (earlier results are unchanged)"
    return f"cannot write {path}: {exc.strerror or exc}"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    Disk-full and permission errors become a one-line :class:`VaesaeError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give results the usual permissions
    except OSError as exc:
        raise VaesaeError(_describe_os_error(path, exc)) from exc
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise VaesaeError(_describe_os_error(path, exc)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VaesaeError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VaesaeError(f"{path} is damaged (not valid JSON: {exc}); delete it and run again") from None


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays as an uncompressed ``.npz``, atomically. Object arrays are refused."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; only plain numeric arrays are stored")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` into memory, never unpickling."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise VaesaeError(f"{path} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        raise VaesaeError(f"{path} is damaged or not an .npz archive ({exc}); delete it and run again") from None


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` straight into the temporary file of :func:`atomic_open` (no copy in memory first)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def cpu_snapshot(obj: Any) -> Any:
    """A copy of ``obj`` that later training cannot change: every tensor copied to the CPU (detached), every
    dict, list and tuple rebuilt; other values (numbers, strings, None) shared. (A checkpoint holds no NumPy
    arrays: :func:`torch_load` would refuse them.)"""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_snapshot(v) for v in obj)
    return obj


class BackgroundSaver:
    """Checkpoints written off the training thread, one at a time, each atomically (:func:`atomic_torch_save`).

    :meth:`save` takes a :func:`cpu_snapshot` of the object at once (training may go on changing the tensors) and
    writes it in a thread: a paper-profile checkpoint (model and AdamW state, about 820 MB) costs seconds of
    serialising and ``fsync`` that no longer hold up the next epoch. :meth:`wait` returns once the write in flight
    (if any) is on disk, and raises its error there; :meth:`save` waits for the one before, so two writes never
    overlap. Call :meth:`wait` before reading, replacing or deleting the file, and before the run ends.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.write_s: float | None = None   # how long the last finished write took in its thread (serialise, fsync)

    def save(self, path: str | os.PathLike, obj: Any) -> None:
        self.wait()
        snapshot = cpu_snapshot(obj)
        self._thread = threading.Thread(target=self._write, args=(Path(path), snapshot), name="vaesae-checkpoint",
                                        daemon=False)
        self._thread.start()

    def _write(self, path: Path, snapshot: Any) -> None:
        t0 = time.perf_counter()
        try:
            atomic_torch_save(path, snapshot)
        except BaseException as exc:   # handed to the training thread by wait()
            self._error = exc
        self.write_s = time.perf_counter() - t0

    @property
    def busy(self) -> bool:
        """Whether a write is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        if err is not None:
            raise err


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise VaesaeError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises several types for damaged files
        raise VaesaeError(f"checkpoint {path} is damaged or unsafe to load ({type(exc).__name__}); delete it and run again") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit hash, suffixed ``-dirty`` when tracked files are modified.

    ``VAESAE_GIT_COMMIT``, when set, wins: a copy of the tree on another machine (the GPU that ran
    the paper profile) may carry no or stale git metadata, so whoever sends it names the commit."""
    if os.environ.get("VAESAE_GIT_COMMIT"):
        return os.environ["VAESAE_GIT_COMMIT"]
    head = git_head(root)
    return "unknown" if head is None else head[0] + ("-dirty" if head[1] else "")


def git_head(root: Path) -> tuple[str, bool] | None:
    """(HEAD's hash, whether tracked files are modified) of the checkout at ``root``; None where it is none."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, env=env).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True, env=env).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha, bool(dirty)


def environment_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        # CPU results depend on it (the order of floating-point sums): OMP_NUM_THREADS, or torch's choice (every core)
        "torch_threads": torch.get_num_threads(),
    }
    return info


def provenance(*, profile: str, dataset: str, source: str, seed: int | None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record every result carries: how it was made."""
    return {
        "profile": profile,
        "dataset": dataset,
        "data_source": source,
        "seed": seed,
        "git_commit": git_commit(),
        "params": dict(params or {}),
        "environment": environment_info(),
    }


def fmt_seconds(seconds: float | None) -> str:
    """m:ss ("?" for None): the job lines, ``--list`` and the README's measured times."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
