"""`genlab sweep`: one config key over several values and seeds, each trained with the same budget, then
both sides of the notes' β trade-off measured: quality (reconstruction, ELBO) and interpretability (MIG,
FactorVAE score). One JSON and one figure."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
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
    after_training: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Train every (value, seed) into out/KEY=VALUE/seedS (resuming an unfinished one), evaluate, summarise.
    after_training(run_dir) runs after each training whose config asks for a report (the CLI writes it)."""
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
        if config.train.report and after_training is not None:
            after_training(run_dir)
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
        "quality": f"test split, first {QUALITY_N} images: -ELBO (k = 1, nats per image), its reconstruction term "
        "and the reconstruction MSE",
        "rows": rows,
        "by_value": aggregate(rows, values),
    }
    atomic_write_bytes(out / "sweep.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "sweep.md", table(summary).encode())
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


FIGURES = ("neg_elbo", "recon_nll", "recon", "kl", "mig", "factor_vae_score", "steps")


def aggregate(rows: list[dict[str, Any]], values: list[Any]) -> list[dict[str, Any]]:
    """Per value: each figure's per-seed values, median, mean and standard deviation over seeds, and the
    value's β in the three conventions (they differ by seed only if the config does)."""
    out = []
    for r in rows:  # -ELBO = E_q[-log p(x|z)] + closed-form KL, so the reconstruction term is their difference
        if "neg_elbo" in r and "kl" in r:
            r.setdefault("recon_nll", r["neg_elbo"] - r["kl"])
    for value in values:
        mine = sorted((r for r in rows if r["value"] == value), key=lambda r: r["seed"])
        entry: dict[str, Any] = {"value": value, "n_seeds": len(mine), "seeds": [r["seed"] for r in mine]}
        for name in ("beta", "beta_sum", "beta_norm"):
            if mine and name in mine[0]:
                entry[name] = mine[0][name]
        for name in FIGURES:
            xs = [r[name] for r in mine if name in r]
            if xs:
                entry[f"{name}_per_seed"] = xs
                entry[f"{name}_median"] = statistics.median(xs)
                entry[name] = statistics.fmean(xs)
                entry[f"{name}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append(entry)
    return out


def representative(summary: dict[str, Any]) -> dict[str, Any]:
    """The run the figure shows: of the value with the best median MIG (lowest median -ELBO without factor
    data), the seed nearest that median, so the picture is a typical run of the best setting, not its luckiest."""
    agg = [a for a in summary["by_value"] if a["n_seeds"]]
    key, better = ("mig_median", max) if all("mig_median" in a for a in agg) else ("neg_elbo_median", min)
    best = better(agg, key=lambda a: a[key])
    figure = key.removesuffix("_median")
    mine = [r for r in summary["rows"] if r["value"] == best["value"]]
    return min(mine, key=lambda r: abs(r[figure] - best[key]))


def table(summary: dict[str, Any]) -> str:
    """The sweep as a Markdown table: per value, β in the three conventions, medians and every seed's figure."""
    agg = [a for a in summary["by_value"] if a["n_seeds"]]
    factors = all("mig_median" in a for a in agg)

    def cell(a: dict[str, Any], name: str, digits: int) -> str:
        if f"{name}_median" not in a:
            return "–"
        seeds = ", ".join(f"{x:.{digits}f}" for x in a[f"{name}_per_seed"])
        return f"**{a[f'{name}_median']:.{digits}f}** ({seeds})"

    head = f"| {summary['key']} | β per image | β normalised | seeds | steps | KL, nats | reconstruction, nats | −ELBO, nats |"
    head += " MIG (dlib) | FactorVAE score |" if factors else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for a in agg:
        line = (
            f"| {a['value']} | {a.get('beta_sum', float('nan')):.3g} | {a.get('beta_norm', float('nan')):.3g} | {a['n_seeds']} "
            f"| {a['steps_median']:.0f} | {cell(a, 'kl', 2)} | {cell(a, 'recon_nll', 1)} | {cell(a, 'neg_elbo', 1)} |"
        )
        if factors:
            line += f" {cell(a, 'mig', 3)} | {cell(a, 'factor_vae_score', 3)} |"
        lines.append(line)
    notes = [
        "",
        "Bold: the median over seeds; in brackets each seed's figure, seeds in order. β per image weighs the summed KL "
        "against the per-image reconstruction sum (Higgins et al.'s β); normalised: β · latent_dim / pixels "
        "(comparable across image sizes). Reconstruction (E_q[−log p(x|z)], the quality β trades), KL and "
        f"−ELBO (their sum, lowest at β = 1 by construction) on the first {QUALITY_N} test images; MIG and "
        "FactorVAE score on the mean code with disentanglement_lib's protocol.",
    ]
    return "\n".join(lines + notes) + "\n"


def draw(summary: dict[str, Any], path: Path) -> Path:
    """β on the x axis: the reconstruction term and -ELBO (quality) on the left axis and MIG / FactorVAE score
    (interpretability) on the right, every seed a faint point and the medians joined; beside it the
    representative run's latent x factor MI heat map and its traversal, each row labelled with the factor it
    carries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = [a for a in summary["by_value"] if a["n_seeds"]]
    numeric = all(isinstance(a["value"], (int, float)) and not isinstance(a["value"], bool) for a in agg)
    x = np.array([float(a["value"]) if numeric else i for i, a in enumerate(agg)])
    best = representative(summary)
    heat = best.get("mutual_information")
    widths = [3, 2, 2] if heat else [3, 2]
    fig, axes = plt.subplots(1, len(widths), figsize=(4.2 * len(widths), 4.4), gridspec_kw={"width_ratios": widths})
    ax = axes[0]

    def series(axis, name: str, color: str, marker: str, label: str, ls: str = "-") -> None:
        for xi, a in zip(x, agg):
            axis.scatter([xi] * len(a[f"{name}_per_seed"]), a[f"{name}_per_seed"], color=color, alpha=0.35, s=14)
        axis.plot(x, [a[f"{name}_median"] for a in agg], color=color, marker=marker, ls=ls, label=f"{label} (median)")

    series(ax, "recon_nll", "tab:blue", "o", "reconstruction")
    series(ax, "neg_elbo", "tab:cyan", "v", "-ELBO", ls=":")
    ax.set_xlabel(summary["key"])
    ax.set_ylabel("nats per image (lower: better quality)", color="tab:blue")
    ax.legend(loc="lower right", fontsize=8)
    if numeric and len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 4:
        ax.set_xscale("log", base=2)
    if not numeric:  # e.g. loss.loss_type: one tick per value
        ax.set_xticks(x, [str(a["value"]) for a in agg])
        ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
    if all("mig_median" in a for a in agg):
        right = ax.twinx()
        series(right, "mig", "tab:red", "s", "MIG")
        series(right, "factor_vae_score", "tab:orange", "^", "FactorVAE score", ls="--")
        right.set_ylabel("disentanglement (higher: more interpretable)", color="tab:red")
        right.set_ylim(0, 1)
        right.legend(loc="upper left", fontsize=8)
    seeds, budget = len(summary["seeds"]), summary["time_budget_s"]
    steps = sorted({r["steps"] for r in summary["rows"]})
    spent = f"{budget:g} s of training each" if budget else f"{'–'.join(map(str, steps[:: max(1, len(steps) - 1)]))} steps each"
    ax.set_title(f"{seeds} seed(s) per value (dots), medians joined; {spent}", fontsize=9)
    label = f"{summary['key']}={best['value']}, seed {best['seed']}"
    labels = None
    if heat:
        from genlab.figures import draw_mi_heatmap
        from genlab.latents import label_dims

        draw_mi_heatmap(axes[1], heat["normalised"], heat["factors"], heat["latent_dims"])
        axes[1].set_title(f"MI(z_d; factor) / H(factor): {label}", fontsize=9)
        labels = label_dims(np.array(heat["normalised"]), heat["factors"])
    _traversal_panel(axes[-1], Path(best["run"]), label, labels)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _traversal_panel(ax, run_dir: Path, label: str, factor_labels: list[str] | None = None) -> None:
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
    names = [f"z{d} ({k:.1f})" + (f" {factor_labels[d].removeprefix('carries ')}" if factor_labels else "")
             for d, k in zip(t.dims, t.kl)]  # fmt: skip
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xticks([])
    ax.set_title(f"traversal: {label}\nrows by KL (nats), each with the factor it carries; dimmed: inactive", fontsize=9)
