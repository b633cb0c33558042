"""Checks that stop a run early instead of late: disk space, writability, signals."""

from __future__ import annotations

import json
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


def is_run_folder(folder: Path) -> bool:
    """A folder genlab train made: checkpoints/, or a config.json that names a model family."""
    if (folder / "checkpoints").is_dir():
        return True
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "family" in config


def check_new_run_folder(folder: Path) -> None:
    """--out is new, empty or a genlab run: never write config.json, metrics.jsonl, status.json and
    report.html over someone else's files."""
    from genlab.runlock import LOCK

    if not folder.is_dir() or is_run_folder(folder):
        return  # a file there, or an unwritable parent, is check_writable's to report
    found = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise GenlabError(f"--out {folder} holds files that are not a genlab run ({shown}); choose a new or empty folder")


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
