"""Checks that stop a run early instead of late: disk space, writability, signals."""

from __future__ import annotations

import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError


def check_writable(run_dir: Path, need_bytes: int) -> None:
    """Fail before training, not at the first checkpoint hours later."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise GenlabError(f"cannot write to {run_dir} ({e.strerror}); choose another --out") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise GenlabError(
            f"{run_dir}: only {free >> 20} MiB free, checkpoints need ~{need_bytes >> 20} MiB; free space or choose another --out"
        )


@contextmanager
def stop_on_signals(flag: dict[str, int]):
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (it then checkpoints)."""

    def handler(signum: int, frame: Any) -> None:
        flag["signal"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
