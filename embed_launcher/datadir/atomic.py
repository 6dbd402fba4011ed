"""Atomic file replacement: a file is either its old or its new content, never half, never too open."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

PUBLIC_MODE = 0o644

Writer = Callable[[int, bytes], None]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse directory fsync, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes, mode: int = PUBLIC_MODE, *,
                 write: Writer = _write_all, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; on failure the old file stays and no temp remains.

    The temp file is born with ``mode`` (O_EXCL, then fchmod to defeat the umask in the other
    direction), so a 0600 key never exists with a looser mode, not even for a moment.
    ``durable=False`` skips the fsyncs (readers still never see half a file): for the live status,
    rewritten every few seconds and worthless after a crash. ``write`` is a fault-injection seam.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            write(fd, payload)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
