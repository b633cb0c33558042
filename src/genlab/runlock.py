"""One writer per run folder: an exclusive lock on FOLDER/.lock for the life of a training, sweep or fit.

flock is released by the kernel when its holder exits, however it exits (kill -9 included), so a lock
file left behind by a dead process never blocks: only its text, the last holder's PID, remains.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from genlab.errors import GenlabError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there go unlocked, as before
    fcntl = None

LOCK = ".lock"


@contextmanager
def run_lock(
    folder: str | Path, what: str, create: bool = True, fix: str = "wait for it to finish or choose another --out"
) -> Iterator[Path]:
    """Hold FOLDER/.lock while the block runs; what names the holder (e.g. "genlab train vae --out RUN") for
    whoever finds the folder in use, fix says what they can do. Makes the folder unless create is False
    (for commands on an existing run, where a mistyped path must not become a new folder). Yields the folder."""
    folder = Path(folder)
    if not create and not folder.is_dir():
        raise GenlabError(f"{folder} is not a folder; pass a run folder made by `genlab train`")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        raise GenlabError(f"cannot write to {folder} ({e.strerror or e}); choose another --out") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise GenlabError(f"{folder} is in use by {_holder(fd)}; {fix}") from None
        # Truncate and write through the descriptor the lock is on: the file is never replaced (a rename
        # would hand a second process a fresh, unlocked inode).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} ({what[:200]})\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    return text if text.startswith("PID ") else "another genlab process"
