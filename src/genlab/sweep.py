"""`genlab sweep`: one config key over several values and seeds, each trained with the same budget, then
both sides of the notes' β trade-off measured: quality (reconstruction, ELBO) and interpretability (MIG,
FactorVAE score). One JSON and one figure."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from genlab.configfile import load_config
from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes
from genlab.losses import beta_conventions
from genlab.models import family

QUALITY_N = 2000  # test images for the quality side (ELBO with k = 1, reconstruction error)


def parse_values(text: str) -> tuple[str, list[Any]]:
    """ "loss.beta=1,2,4" -> ("loss.beta", [1, 2, 4])."""
    from genlab.configfile import parse_value

    key, eq, values = text.partition("=")
    if not eq or "." not in key or not values.strip():
        raise GenlabError(f"--values {text!r}: write it as section.key=v1,v2,..., e.g. --values loss.beta=1,2,4,8,16")
    return key.strip(), [parse_value(v.strip()) for v in values.split(",")]


def run_folder(out: Path, key: str, value: Any, seed: int) -> Path:
    """out/KEY=VALUE/seedS. A value may be a path (data.dataset=../other): its / and \\ are escaped, so the
    name stays one folder inside out (never "..", as it starts with KEY=)."""
    name = f"{key}={value}".replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")
    return out / name / f"seed{seed}"


def check_sweep_folder(out: Path) -> None:
    """--out is new, empty or a sweep folder (an interrupted sweep continues in it), never someone else's."""
    from genlab.runlock import LOCK

    found = sorted(p.name for p in out.iterdir() if p.name != LOCK) if out.is_dir() else []
    if found and not (out / "sweep.json").exists() and not any("=" in name for name in found):
        raise GenlabError(
            f"--out {out} holds files that are not a genlab sweep ({', '.join(found[:3])}); choose a new or empty folder"
        )


def run_sweep(
    name: str,
    key: str,
    values: list[Any],
    seeds: list[int],
    out: Path,
    config_file: str | None,
    overrides: dict[str, Any],
    time_budget: float | None,
) -> dict[str, Any]:
    """Train every (value, seed) into out/KEY=VALUE/seedS (resuming an unfinished one), evaluate, summarise."""
    from genlab.report import write_run_report
    from genlab.runlock import run_lock
    from genlab.train.loop import train

    record = family(name)
    if record.kind != "vae" or record.conditional:
        raise GenlabError("the sweep measures a VAE's trade-off (ELBO against disentanglement); use genlab sweep vae")
    configs = {}
    for value in values:
        for seed in seeds:
            extra = {**overrides, key: value, "train.seed": seed}
            if time_budget is not None:
                extra["train.time_budget"] = time_budget
            configs[(value, seed)] = load_config(name, config_file, extra)  # every config checked before any training
    rows = []
    for (value, seed), config in configs.items():
        run_dir = run_folder(out, key, value, seed)
        done = run_dir / "sweep_row.json"
        if (row := _measured(done)) is not None:
            rows.append(row)
            print(f"genlab: {run_dir} already measured")
            continue
        resume = (run_dir / "checkpoints" / "latest").exists()
        started = time.monotonic()
        with run_lock(run_dir, f"genlab sweep {name}, training {run_dir}"):  # against a genlab train --resume of it
            result = train(config, run_dir, resume=resume, quiet=True)
        if config.train.report:
            write_run_report(run_dir)
        row = {
            "value": value,
            "seed": seed,
            "run": str(run_dir),
            "steps": result.step,
            "train_s": round(time.monotonic() - started, 1),
        }
        row.update(measure(run_dir))
        atomic_write_bytes(done, (json.dumps(row, indent=2) + "\n").encode())
        rows.append(row)
        print(
            f"genlab: {key}={value} seed {seed}: {result.step} steps, -ELBO {row['neg_elbo']:.2f}, "
            f"recon {row['recon']:.4g}"
            + (f", MIG {row['mig']:.3f}, FactorVAE {row['factor_vae_score']:.3f}" if "mig" in row else "")
        )
    summary = {
        "family": name,
        "key": key,
        "values": values,
        "seeds": seeds,
        "time_budget_s": time_budget,
        "config_file": config_file,
        "overrides": overrides,
        "quality": f"test split, first {QUALITY_N} images: -ELBO (k = 1, nats per image) and reconstruction error",
        "rows": rows,
        "by_value": aggregate(rows, values),
    }
    atomic_write_bytes(out / "sweep.json", (json.dumps(summary, indent=2) + "\n").encode())
    draw(summary, out / "sweep.png")
    return summary


def _measured(done: Path) -> dict[str, Any] | None:
    """A run's row from its sweep_row.json; None when absent or torn (the finished run is measured again)."""
    try:
        row = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and "value" in row else None


def measure(run_dir: Path) -> dict[str, Any]:
    """Quality and (on factor data) interpretability of a finished run."""
    from genlab.eval.evaluate import vae_likelihood
    from genlab.eval.factor_report import factor_scores
    from genlab.runs import load_run, splits

    config, model, _ = load_run(str(run_dir))
    data, test = splits(config)
    lk = vae_likelihood(model, config, test, QUALITY_N, 1, seed=0)
    pixels = math.prod(test.images.shape[1:])
    row: dict[str, Any] = {"neg_elbo": lk["neg_elbo"], "recon": lk["recon_mse"], "kl": lk["kl"]}
    row.update(beta_conventions(config.loss, config.model.latent_dim, pixels))
    if getattr(data, "factors", None) is not None:
        row.update(factor_scores(model, config.data.binarize, data))
    return row


def aggregate(rows: list[dict[str, Any]], values: list[Any]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each figure, per value."""
    out = []
    for value in values:
        mine = [r for r in rows if r["value"] == value]
        entry: dict[str, Any] = {"value": value, "n_seeds": len(mine)}
        for name in ("neg_elbo", "recon", "kl", "mig", "factor_vae_score", "steps"):
            xs = [r[name] for r in mine if name in r]
            if xs:
                entry[name] = statistics.fmean(xs)
                entry[f"{name}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append(entry)
    return out


def draw(summary: dict[str, Any], path: Path) -> Path:
    """β on the x axis, quality (-ELBO) on the left axis, MIG and FactorVAE score on the right; the best
    model's traversal beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = [a for a in summary["by_value"] if a["n_seeds"]]
    numeric = all(isinstance(a["value"], (int, float)) and not isinstance(a["value"], bool) for a in agg)
    x = np.array([float(a["value"]) if numeric else i for i, a in enumerate(agg)])
    fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    ax.errorbar(x, [a["neg_elbo"] for a in agg], yerr=[a["neg_elbo_std"] for a in agg], color="tab:blue", marker="o", capsize=3)
    ax.set_xlabel(summary["key"])
    ax.set_ylabel("-ELBO, nats per image (lower: better quality)", color="tab:blue")
    if numeric and len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 4:
        ax.set_xscale("log", base=2)
    if not numeric:  # e.g. loss.loss_type: one tick per value
        ax.set_xticks(x, [str(a["value"]) for a in agg])
        ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
    if all("mig" in a for a in agg):
        right = ax.twinx()
        right.errorbar(
            x, [a["mig"] for a in agg], yerr=[a["mig_std"] for a in agg], color="tab:red", marker="s", capsize=3, label="MIG"
        )
        fv, fv_std = [a["factor_vae_score"] for a in agg], [a["factor_vae_score_std"] for a in agg]
        right.errorbar(x, fv, yerr=fv_std, color="tab:orange", marker="^", ls="--", capsize=3, label="FactorVAE score")
        right.set_ylabel("disentanglement (higher: more interpretable)", color="tab:red")
        right.set_ylim(0, 1)
        right.legend(loc="upper left", fontsize=8)
        best = max(summary["rows"], key=lambda r: r.get("mig", -1))
    else:
        best = min(summary["rows"], key=lambda r: r["neg_elbo"])
    seeds, budget = len(summary["seeds"]), summary["time_budget_s"]
    steps = sorted({r["steps"] for r in summary["rows"]})
    spent = f"{budget:g} s of training each" if budget else f"{'–'.join(map(str, steps[:: max(1, len(steps) - 1)]))} steps each"
    ax.set_title(f"mean ± std over {seeds} seed(s), {spent}", fontsize=9)
    _traversal_panel(ax_img, Path(best["run"]), f"{summary['key']}={best['value']}, seed {best['seed']}")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _traversal_panel(ax, run_dir: Path, label: str) -> None:
    from genlab.data import crop_to
    from genlab.io import make_grid
    from genlab.latents import dim_inactive, traverse
    from genlab.runs import load_run, test_split

    config, model, state = load_run(str(run_dir))
    test = test_split(config)
    t = traverse(model, "vae", test.images[:500], config.data.binarize, dims=10, steps=7)
    grid = make_grid(crop_to(dim_inactive(t), test.original_size), nrow=t.steps)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([3 + (grid.shape[0] - 4) / len(t.dims) * (i + 0.5) for i in range(len(t.dims))])
    ax.set_yticklabels([f"z{d} ({k:.1f})" for d, k in zip(t.dims, t.kl)], fontsize=7)
    ax.set_xticks([])
    ax.set_title(f"traversal, best MIG: {label}\nrows by KL (nats), dimmed: inactive", fontsize=9)
