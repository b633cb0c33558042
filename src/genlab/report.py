"""One self-contained HTML report of one or more runs: status, curves, pictures, evaluations, config.

The page holds everything (pictures as data: URIs, curves as JSON, the chart code inline), so it
opens from disk offline. What is shown comes from the run folder alone: metrics.jsonl, status.json,
config.json, samples/*.png, evals/*.json, any picture in the folder, and sweep.json for a sweep.
A picture is embedded only when it is a regular file inside the run (no links out of it: a shared
folder's `x.png -> ~/.ssh/id_rsa` stays out of the page), a PNG or GIF by its first bytes, and not huge.
Which keys share a chart is the family's trainer's choice (Trainer.charts); a family without one gets a
chart per key, so a new model family needs no change to the page.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.templates import asset, page

MAX_POINTS = 2000  # per curve: longer ones are thinned evenly (first and last kept)
MAX_FRAMES = 40  # per picture slider: more epochs are thinned evenly (first and last kept)
MAX_PICTURE_BYTES = 20_000_000  # per embedded picture; genlab's grids are well under 1 MB
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif"}
EPOCH_PICTURE = re.compile(r"(?:traverse_)?epoch_(\d+)\.png")  # what the training loop names them
NOT_CURVES = {"step", "epoch", "world_size"}
SPEED_KEYS = {"images_per_s"}
# Which way is better, for marking the best run in the evaluation table; unknown keys are not marked.
LOWER_IS_BETTER = {"fd", "neg_elbo", "nll_iw", "recon", "bits_per_dim", "inception_fid", "gaussian_total_correlation"}
HIGHER_IS_BETTER = {
    "precision", "recall", "density", "coverage", "is_mean", "mig", "sap", "dci_disentanglement",
    "dci_completeness", "dci_informativeness", "beta_vae_score", "factor_vae_score", "test_accuracy",
}  # fmt: skip
REASONS = {
    "done": "all epochs done",
    "max_steps": "reached train.max_steps",
    "time_budget": "reached its time budget",
    "interrupted": "interrupted (checkpoint saved; --resume continues it)",
}
METHOD_KEYS = (
    "n", "seed", "reference", "sample_quality.features.network", "sample_quality.features.test_accuracy",
    "sample_quality.pr_k", "sample_quality.dc_k",
)  # fmt: skip


@dataclass
class Chart:
    title: str
    series: dict[str, list[tuple[float, float]]]  # name -> (step, value) points
    reference: float | None = None  # a horizontal line, e.g. D = 1/2


@dataclass
class Gallery:
    title: str
    frames: list[tuple[str, str]]  # (label, data: URI)


@dataclass
class RunView:
    """What the report shows of one run folder (or of one sweep folder)."""

    name: str
    path: Path
    family: str
    config: dict[str, Any]
    status: dict[str, Any]
    curves: dict[str, list[tuple[float, float]]]
    galleries: list[Gallery] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None


def read_metrics(path: Path) -> tuple[dict[str, list[tuple[float, float]]], list[str], dict[str, Any]]:
    """metrics.jsonl -> (curves by key, warnings logged, the last value of every key)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    warnings: list[str] = []
    last: dict[str, Any] = {}
    if not path.exists():
        return curves, warnings, last
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write: the rest of the file is still good
        if not isinstance(record, dict):
            continue
        last.update(record)
        if isinstance(record.get("warning"), str):
            warnings.append(f"step {record.get('step')}: {record['warning']}")
        step = record.get("step")
        if not isinstance(step, (int, float)):
            continue
        for k, v in record.items():
            if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                curves.setdefault(k, []).append((float(step), float(v)))
    return {k: thin(v, MAX_POINTS) for k, v in curves.items()}, warnings, last


def thin(items: list, n: int) -> list:
    """At most n items, evenly spaced, the first and last kept."""
    if len(items) <= n:
        return items
    idx = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in idx]


def chart_groups(name: str) -> dict[str, tuple[tuple[str, ...], float | None]]:
    """Which curves share a chart: the family's trainer says; unknown families get a chart per key."""
    from genlab.models import FAMILIES
    from genlab.train import trainer_for

    return dict(trainer_for(FAMILIES[name]).charts) if name in FAMILIES else {}


def charts(views: list[RunView]) -> list[Chart]:
    """Curves of every run, grouped as each family asks; series are named by run when there are several."""
    out: dict[str, Chart] = {}
    several = len(views) > 1
    for view in views:
        groups = chart_groups(view.family)
        placed: set[str] = set()
        for title, (keys, ref) in groups.items():
            for k in keys:
                if k in view.curves:
                    chart = out.setdefault(title, Chart(title, {}, ref))
                    chart.series[f"{view.name}: {k}" if several else k] = view.curves[k]
                    placed.add(k)
        for k, points in view.curves.items():
            if k in placed:
                continue
            title = "images per second" if k in SPEED_KEYS else k
            chart = out.setdefault(title, Chart(title, {}))
            chart.series[view.name if several else k] = points
    return list(out.values())


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def config_table(views: list[RunView]) -> tuple[list[tuple[str, list[Any]]], int]:
    """(rows of key and one value per run, number of keys hidden); several runs: only keys that differ."""
    flats = [flatten(v.config) for v in views]
    keys = sorted(set().union(*flats))
    rows = [(k, [f.get(k, "–") for f in flats]) for k in keys]
    if len(views) == 1:
        return rows, 0
    differ = [(k, vals) for k, vals in rows if any(json.dumps(x) != json.dumps(vals[0]) for x in vals)]
    return differ, len(rows) - len(differ)


def eval_table(views: list[RunView]) -> tuple[list[dict[str, Any]], list[tuple[str, list[Any]]]]:
    """(metric rows with the best run marked, method rows); runs without an evaluation show –."""
    flats = [flatten(v.evaluation) if v.evaluation else {} for v in views]
    method_keys = [k for k in METHOD_KEYS if any(k in f for f in flats)]
    method = [(k, [f.get(k, "–") for f in flats]) for k in method_keys]
    skip = set(METHOD_KEYS) | {"run", "run_step", "family", "data", "genlab", "torch", "train_seed", "seconds"}
    keys = [k for k in dict.fromkeys(k for f in flats for k in f) if k not in skip and not k.endswith(".sha256")]
    rows = []
    for k in keys:
        values = [f.get(k) for f in flats]
        leaf = k.rsplit(".", 1)[-1]
        numeric = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        best = None
        if len(views) > 1 and len(numeric) > 1 and (leaf in LOWER_IS_BETTER or leaf in HIGHER_IS_BETTER):
            pick = min if leaf in LOWER_IS_BETTER else max
            best = pick(numeric, key=lambda iv: iv[1])[0]
        direction = "↓" if leaf in LOWER_IS_BETTER else "↑" if leaf in HIGHER_IS_BETTER else ""
        rows.append({"key": k, "direction": direction, "values": [show(v) for v in values], "best": best})
    return rows, [(k, [show(v) for v in vals]) for k, vals in method]


def show(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(show(v) for v in value)
    return str(value)


def data_uri(path: Path, run: Path) -> str:
    """The picture at path as a data: URI; ValueError saying why when the page must not hold it."""
    kind, data = read_picture(path, run)
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def read_picture(path: Path, run: Path) -> tuple[str, bytes]:
    """(png or gif, bytes) of a regular file inside run; ValueError naming the reason otherwise."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise ValueError("a symbolic link")
        if not stat.S_ISREG(mode):
            raise ValueError("not a regular file")
        if not path.resolve().is_relative_to(run.resolve()):
            raise ValueError("outside the run folder")
        # O_NONBLOCK: a FIFO swapped in since the lstat opens at once (and is refused below) instead of hanging.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError("not a regular file")
            data = f.read(MAX_PICTURE_BYTES + 1)
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from None
    if len(data) > MAX_PICTURE_BYTES:
        raise ValueError(f"larger than {MAX_PICTURE_BYTES / 1e6:g} MB")
    kind = next((k for sig, k in SIGNATURES.items() if data.startswith(sig)), None)
    if kind is None:
        raise ValueError("not a PNG or GIF file")
    return kind, data


def _epoch(path: Path) -> int:
    return int(EPOCH_PICTURE.fullmatch(path.name).group(1))


def galleries(run: Path, skipped: list[str] | None = None) -> list[Gallery]:
    """Per-epoch pictures under one slider each (samples, traversals), then other pictures of the run;
    the pictures left out are added to skipped, with why."""
    skipped = [] if skipped is None else skipped

    def embed(items: list[tuple[str, Path]]) -> list[tuple[str, str]]:
        frames = []
        for label, p in items:
            try:
                frames.append((label, data_uri(p, run)))
            except ValueError as e:
                skipped.append(f"{p.relative_to(run)} not shown: {e}")
        return frames

    out = []
    samples = run / "samples"
    for title, pattern, last in (
        ("samples (fixed noise) by epoch", "epoch_*.png", "last.png"),
        ("latent traversals by epoch", "traverse_epoch_*.png", "traverse_last.png"),
    ):
        paths = sorted((p for p in samples.glob(pattern) if EPOCH_PICTURE.fullmatch(p.name)), key=_epoch)
        frames = [(f"epoch {_epoch(p)}", p) for p in paths]
        if (samples / last).exists() or (samples / last).is_symlink():
            frames.append(("end of run", samples / last))
        if frames := embed(thin(frames, MAX_FRAMES)):
            out.append(Gallery(title, frames))
    for p in sorted([*run.glob("*.png"), *run.glob("*.gif")]):
        if frames := embed([(p.name, p)]):
            out.append(Gallery(p.stem.replace("_", " "), frames))
    return out


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object file of the run; a one-line error naming it, and fix, when it is torn or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise GenlabError(f"{path} is damaged ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise GenlabError(f"{path} is damaged (not a JSON object); {fix}")
    return data


def latest_eval(run: Path) -> dict[str, Any] | None:
    """The newest evals/*.json (by the step it scored, then time written)."""
    found = []
    for p in (run / "evals").glob("*.json"):
        try:
            found.append((json.loads(p.read_text()), p.stat().st_mtime))
        except (OSError, json.JSONDecodeError):
            continue
    if not found:
        return None
    return max(found, key=lambda rm: (rm[0].get("run_step") or 0, rm[1]))[0]


def load_view(path: str | Path) -> RunView:
    """Everything the report shows of a run folder or a sweep folder."""
    run = Path(path)
    if (run / "sweep.json").exists():
        sweep = read_json(run / "sweep.json", "run the same genlab sweep again: finished runs are not retrained")
        pictures, skipped = [], []
        if (run / "sweep.png").exists():
            try:
                pictures = [Gallery("the sweep's figure", [("sweep.png", data_uri(run / "sweep.png", run))])]
            except ValueError as e:
                skipped.append(f"sweep.png not shown: {e}")
        status = {"runs": len(sweep.get("rows", [])), "reason": "sweep", "warnings": skipped}
        config = {"sweep": {k: v for k, v in sweep.items() if k != "rows"}}
        return RunView(run.name, run, sweep.get("family", "?"), config, status, {}, pictures, sweep=sweep)
    if not (run / "config.json").exists():
        raise GenlabError(f"{run}: not a genlab run folder (no config.json); give the --out folder of a genlab train run")
    config = read_json(run / "config.json", "copy the config.json of the run's newest checkpoint (checkpoints/ckpt-*/) over it")
    curves, warnings, last = read_metrics(run / "metrics.jsonl")
    status: dict[str, Any] = {"steps": last.get("step", 0), "epochs": last.get("epoch", 0)}
    if (run / "status.json").exists():
        try:  # only the end of the run's story: a damaged one leaves the rest of the page worth reading
            status.update(read_json(run / "status.json", "it is written again when the run next stops"))
            status["reason"] = REASONS.get(status.get("reason"), status.get("reason"))
        except GenlabError as e:
            status["reason"] = f"unknown: {e}"
    else:
        status["reason"] = "unknown: no status.json (still running, or killed before the end)"
    if last.get("skipped_steps"):
        warnings.append(f"{last['skipped_steps']} step(s) skipped for a non-finite loss (train.nan_policy = skip)")
    evaluation = latest_eval(run)
    collapse = (evaluation or {}).get("sample_quality", {}).get("collapse_warning")
    if collapse:
        warnings.append(f"evaluation: {collapse}")
    pictures = galleries(run, warnings)
    status["warnings"] = warnings
    name = run.name if run.name not in ("vae", "gan") or not run.parent.name else f"{run.parent.name}/{run.name}"
    return RunView(name, run, config.get("family", "?"), config, status, curves, pictures, evaluation)


def render(views: list[RunView]) -> str:
    """The report page as one HTML string."""
    from genlab import __version__

    rows, method = eval_table(views)
    config_rows, hidden = config_table(views)
    data = {
        "charts": [{"title": c.title, "series": c.series, "reference": c.reference} for c in charts(views)],
        "galleries": [[{"title": g.title, "frames": g.frames} for g in v.galleries] for v in views],
    }
    return page("report.html.j2").render(
        views=views, eval_rows=rows, method_rows=method, config_rows=config_rows, hidden=hidden, data=data, show=show,
        version=__version__, css=asset("style.css"), charts_js=asset("charts.js"),
    )  # fmt: skip


def write_report(paths: list[str | Path], out: str | Path) -> Path:
    """Render the report of paths into out (atomically); returns out."""
    from genlab.io import atomic_write_bytes

    views = [load_view(p) for p in paths]
    names = [v.name for v in views]
    for i, v in enumerate(views):  # two runs named alike (runs/a/vae, runs/b/vae) stay apart in legends
        if names.count(v.name) > 1:
            v.name = f"{v.name} ({i + 1})"
    return atomic_write_bytes(out, render(views).encode())


def write_run_report(run_dir: Path) -> None:
    """RUN/report.html at the end of training; a failure here warns, it does not fail the finished run."""
    try:
        write_report([run_dir], run_dir / "report.html")
    except Exception as e:  # noqa: BLE001 - whatever broke the page, the checkpoints are complete
        print(f"genlab: warning: the run finished but its report was not written ({e}); "
              f"try again with: genlab report {run_dir}", file=sys.stderr)  # fmt: skip
