"""Writing the files a user sees (pictures, pages, sample files, records): each is written to
a temporary name beside its target and renamed over it only when complete, so a full disk, an
error or a Ctrl-C never leaves a cut-off file where a good one was (checkpoints have their own
scheme, :mod:`ganforge.training.checkpoint`)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_folder", "atomic_path", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path with ``path``'s suffix (writers pick the format from it); renamed to
    ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path.write_text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike) -> Iterator[Path]:
    """A folder written in full under a temporary name beside ``out`` (yielded), then renamed to
    ``out`` (new, or an empty folder): a failure leaves nothing behind, and an OS error is one
    line naming the folder."""
    import shutil

    from ganforge.errors import GanforgeError

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GanforgeError(f"cannot write {out}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
