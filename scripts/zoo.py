"""The notes' models and their fixes on Fashion-MNIST at equal epochs, scored alike, with FD against CPU-seconds.

Usage: python scripts/zoo.py [--epochs 5] [--seeds 0,1,2] [--parallel 2] [--models gan,vae,...] [--out runs/zoo]
       python scripts/zoo.py --epochs 20 --models gan,vae,... --continue-from runs/zoo --out runs/zoo-long

Every model trains its shipped config for --epochs epochs of batch 64 (WGAN-GP twice: at equal epochs,
and at equal generator updates, n_critic times the critic steps), each run alone on one core
(OMP_NUM_THREADS=1, --parallel runs at once on as many cores, nothing else on the machine). Each run
keeps snapshots at 30, 60, 120, 240 and 480 CPU-seconds of its training (`train.snapshots`); the final
weights and every snapshot are scored by `genlab eval --n 10000` in the shipped classifier's features,
GANs with their raw and their exponential-moving-average generator. The 2-Stage rows fit the second
stage on the vae and sigma-vae runs, its CPU-seconds added to the row's; the -bf16 rows train their
fp32 row's config under bf16 autocast (train.precision), and the table holds each against it.
Writes OUT/<row>-s<seed>*.json, OUT/table.md (means ± sd, every seed, each model against the notes'
models in pooled seed sd), OUT/curves.png (FD against CPU-seconds) and OUT/zoo.png (a row of samples
per model). --continue-from
resumes the runs of a shorter zoo to the longer setting (resume is exact: the same runs as trained
straight through) and draws their earlier points on the same curves. Scored runs are skipped, so an
interrupted call continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENLAB = [sys.executable, "-m", "genlab.cli"]
SNAPSHOTS = (30, 60, 120, 240, 480)
STEPS_PER_EPOCH = 60_000 // 64


@dataclass(frozen=True)
class Row:
    """One row of the table: a shipped config trained for the zoo's epochs, or a second stage on another row's runs."""

    family: str
    what: str
    config: str | None = None  # under configs/; None for a 2-Stage row, which trains nothing of its own
    sets: tuple[str, ...] = ()  # --set items over the config
    first: str | None = None  # a 2-Stage row: the row whose runs its second stage is fitted on
    fp32: str | None = None  # a bf16 row: the row it repeats in fp32 (held against it, drawn in its colour)
    step_factor: int = 1  # steps per epoch's worth: WGAN-GP at equal G updates takes n_critic (5) x the critic steps

    def folder(self, name: str, seed: int) -> str:
        """The run folder (under OUT/runs) whose weights the row scores."""
        return f"{self.first or name}-s{seed}"

    @property
    def base(self) -> str | None:
        """The row whose colour this one wears on the curves (None: a colour of its own)."""
        return self.first or self.fp32


ROWS = {
    "gan": Row("gan", "the notes' MLP GAN", "gan_fashion.toml"),
    "vae": Row("vae", "the notes' VAE (fixed-variance Gaussian decoder)", "vae_fashion.toml"),
    "sigma-vae": Row("vae", "σ-VAE: the notes' VAE with a calibrated decoder", "sigma_vae_fashion.toml"),
    # kld_weight = 2γ/1024 with γ in genlab's [-1, 1] pixel units: γ = 1 in Dai & Wipf's [0, 1] units is γ = 4 here
    "vae-g1": Row("vae", "the notes' VAE at a fixed γ = 1 ([0, 1] pixels)", "vae_fashion.toml", ("loss.kld_weight=0.0078125",)),
    "dcgan": Row("dcgan", "DCGAN (D first, real and fake batches apart)", "dcgan_fashion.toml"),
    "sngan": Row("sngan", "SNGAN (the standard CNN D, spectral norm, hinge)", "sngan_fashion.toml"),
    "wgan-gp": Row("wgan-gp", "WGAN-GP at equal epochs (1/5 the G updates)", "wgan_gp_fashion.toml"),
    "wgan-gp-g": Row("wgan-gp", "WGAN-GP at equal G updates", "wgan_gp_fashion.toml", step_factor=5),
    "cgan": Row("cgan", "class-conditional GAN (class at G's input and in CBN, projection D)", "cgan_fashion.toml"),
    "cvae": Row("cvae", "class-conditional VAE (learned p(z|y), label in every block)", "cvae_fashion.toml"),
    # whether the σ-VAE's calibrated decoder lifts the bound its reconstructions put on the cVAE's conditional accuracy
    "cvae-sigma": Row("cvae", "cVAE, σ-VAE decoder", "cvae_fashion.toml", ("model.decoder=sigma", "loss.beta=1.0")),
    "dcgan-bf16": Row("dcgan", "DCGAN under bf16 autocast", "dcgan_fashion.toml", ("train.precision=bf16",), fp32="dcgan"),
    "cgan-bf16": Row("cgan", "cGAN under bf16 autocast", "cgan_fashion.toml", ("train.precision=bf16",), fp32="cgan"),
    "vae+2stage": Row("vae", "the notes' VAE + a 2-Stage second stage", first="vae"),
    "sigma-vae+2stage": Row("vae", "σ-VAE + a 2-Stage second stage (Dai & Wipf)", first="sigma-vae"),
    "vae-g1+2stage": Row("vae", "the γ = 1 VAE + a 2-Stage second stage", first="vae-g1"),
}
STAGE2_EPOCHS = 30
EMA_DECAY = 0.999


def run(cmd: list[str], log: Path) -> float:
    """Run a genlab command alone on one core; its CPU-seconds (user + system, children included)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, check=True, env=env, stdout=f, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # threads of this script share it: see cpu_s in status.json
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def has_ema(target: Path) -> bool:
    """Whether a run (or snapshot) folder's newest checkpoint holds an EMA generator."""
    latest = target / "checkpoints" / "latest"
    return latest.exists() and (target / "checkpoints" / latest.read_text().strip() / "ema.safetensors").exists()


def evaluate(target: Path, out: Path, log: Path, stage2: bool = False, light: bool = False) -> None:
    """genlab eval of a run or snapshot folder into out, and of its EMA generator (if any) into out-ema."""
    for weights in ("raw", "ema") if has_ema(target) else ("raw",):
        path = out if weights == "raw" else out.with_name(out.stem + "-ema.json")
        if path.exists():
            continue
        cmd = [*GENLAB, "eval", str(target), "--n", "10000", "--json", str(path), "--weights", weights]
        cmd += ["--nll-n", "100", "--k", "10"] if light else ["--nll-n", "200", "--k", "100"]
        run(cmd + (["--stage2"] if stage2 else []), log)


def trained_steps(folder: Path) -> int:
    """The steps a run folder's training reached (0 where it has not finished an invocation)."""
    status = folder / "status.json"
    return json.loads(status.read_text())["steps"] if status.exists() else 0


def continue_run(source: Path, folder: Path) -> None:
    """A copy of a shorter run of the same row and seed to resume from: resume is exact, so the longer run
    equals one trained straight through, and the shorter run's steps are not paid twice. Its snapshots stay behind."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("snapshots", "tb", "evals", "report.html", ".lock"))


def train_and_score(name: str, seed: int, epochs: int, out: Path, start: Path | None = None) -> None:
    row = ROWS[name]
    runs, log = out / "runs", out / "logs" / f"{name}-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    if row.first:  # a second stage on the first stage of this seed, once that is scored
        first = runs / row.folder(name, seed)
        while not (out / f"{row.first}-s{seed}.json").exists():
            time.sleep(10)
        info = first / "stage2" / "stage2.json"
        if not info.exists():
            run([*GENLAB, "stage2", str(first), "--epochs", str(STAGE2_EPOCHS), "--seed", str(seed)], log)
        evaluate(first, out / f"{name}-s{seed}.json", log, stage2=True)
        return
    folder = runs / f"{name}-s{seed}"
    steps = epochs * STEPS_PER_EPOCH * row.step_factor
    shorter = start / "runs" / folder.name if start else None
    if shorter and not folder.exists() and 0 < trained_steps(shorter) < steps:
        continue_run(shorter, folder)
    if trained_steps(folder) < steps:
        cmd = [*GENLAB, "train", row.family, "--config", str(ROOT / "configs" / row.config), "--seed", str(seed), "--quiet"]
        cmd += ["--epochs", str(math.ceil(steps / STEPS_PER_EPOCH)), "--max-steps", str(steps)]
        cmd += ["--set", f"train.snapshots={list(SNAPSHOTS)}", "--set", "train.report=false"]
        for item in row.sets:  # the row's own settings over its config
            cmd += ["--set", item]
        if row.family not in ("vae", "cvae"):  # GANs: keep an EMA of G's weights beside the raw G (both scored)
            cmd += ["--set", f"train.ema={EMA_DECAY}"]
        if (folder / "config.json").exists():
            cmd = [*GENLAB, "train", row.family, "--resume", str(folder), "--max-steps", str(steps), "--quiet",
                   "--epochs", str(math.ceil(steps / STEPS_PER_EPOCH))]  # fmt: skip
        else:
            cmd += ["--out", str(folder)]
        run(cmd, log)
    evaluate(folder, out / f"{name}-s{seed}.json", log)
    for snap in sorted((folder / "snapshots").glob("cpu-*")):
        evaluate(snap, out / f"{name}-s{seed}-{snap.name}.json", log, light=True)


def mean_std(values: list[float], digits: int) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def run_facts(out: Path, name: str, seed: int) -> dict[str, float]:
    """Steps, CPU-seconds, training images/s and parameters of one row's run (both stages for 2-Stage rows)."""
    folder = out / "runs" / ROWS[name].folder(name, seed)
    status = json.loads((folder / "status.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]  # the first window holds start-up
    weights = folder / "checkpoints" / (folder / "checkpoints" / "latest").read_text().strip() / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if "running" not in k and "num_batches" not in k)
    cpu = status.get("cpu_s", status.get("wall_s"))
    if ROWS[name].first:
        info = json.loads((folder / "stage2" / "stage2.json").read_text())
        cpu += info.get("cpu_s", info["seconds"])
        params += info.get("params", 0)
    return {"steps": status["steps"], "cpu_s": cpu, "images_per_s": statistics.median(speeds) if speeds else float("nan"),
            "params": params}  # fmt: skip


def uniform_distance(hist: list[float]) -> float:
    """Total-variation distance of a class histogram from uniform: 0 for every class alike, 0.9 for one class."""
    return 0.5 * sum(abs(h - 1 / len(hist)) for h in hist)


def pooled_sd(a: list[float], b: list[float]) -> float:
    va = statistics.variance(a) if len(a) > 1 else 0.0
    vb = statistics.variance(b) if len(b) > 1 else 0.0
    return math.sqrt((va + vb) / 2)


def scores(out: Path, name: str, seeds: list[int], suffix: str = "") -> list[dict]:
    paths = [out / f"{name}-s{s}{suffix}.json" for s in seeds]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def ranking(fds: dict[str, list[float]]) -> dict[str, str]:
    """1 + the number of models clearly better (mean FD lower by 2 pooled seed sd or more); '=' marks a
    model tied (a gap under 2 pooled sd) with at least one other."""
    mean = {n: statistics.mean(v) for n, v in fds.items()}

    def clear(a: str, b: str) -> bool:
        return abs(mean[a] - mean[b]) >= 2 * pooled_sd(fds[a], fds[b])

    ranks = {}
    for name in fds:
        better = sum(1 for other in fds if other != name and mean[other] < mean[name] and clear(other, name))
        tied = any(other != name and not clear(other, name) for other in fds)
        ranks[name] = f"{better + 1}{'=' if tied else ''}"
    return ranks


def table(out: Path, names: list[str], seeds: list[int], epochs: int, machine: str) -> str:
    rows, fds = [], {}
    for name in names:
        found = scores(out, name, seeds)
        if not found:
            continue
        q = [r["sample_quality"] for r in found]
        fds[name] = [x["fd"] for x in q]
        facts = [run_facts(out, name, s) for s in seeds if (out / f"{name}-s{s}.json").exists()]
        ema = [r["sample_quality"]["fd"] for r in scores(out, name, seeds, "-ema")]
        rows.append((name, q, facts, ema))
    by_fd = sorted(fds, key=lambda n: fds[n][0])
    ranks = ranking(fds) if fds and len(seeds) > 1 else {n: str(i + 1) for i, n in enumerate(by_fd)}
    wgan = " (WGAN-GP also at equal G updates)" if "wgan-gp-g" in fds else ""
    lines = [
        f"Fashion-MNIST, {epochs} epochs of batch 64 per run{wgan}, seeds "
        f"{', '.join(map(str, seeds))}, each run alone on one core of {machine}; `genlab eval --n 10000` against the first "
        "10,000 test images in genlab's classifier features. Rank: by mean FD, '=' where the gap is under 2 pooled seed sd"
        + (" (one seed: no seed sd, so ranks are by FD alone, no gap called clear or tied)." if len(seeds) < 2 else "."),
        "",
        "| rank | model | FD ↓ (raw G) | FD, EMA G | precision | recall | density | coverage | class hist. to uniform (TV) "
        "| largest class | conditional accuracy | steps | CPU-s | train img/s | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, q, facts, ema in rows:
        col = lambda key, d, q=q: mean_std([x.get(key) for x in q], d)  # noqa: E731
        tv = mean_std([uniform_distance(x["class_hist"]) for x in q], 3)
        top = mean_std([max(x["class_hist"]) for x in q], 3)
        acc = col("conditional_accuracy", 3) if "conditional_accuracy" in q[0] else "–"
        lines.append(
            f"| {ranks.get(name, '')} | {name}: {ROWS[name].what} | {col('fd', 1)} | {mean_std(ema, 1)} | {col('precision', 3)} "
            f"| {col('recall', 3)} | {col('density', 3)} | {col('coverage', 3)} | {tv} | {top} | {acc} "
            f"| {mean_std([f['steps'] for f in facts], 0)} | {mean_std([f['cpu_s'] for f in facts], 0)} "
            f"| {mean_std([f['images_per_s'] for f in facts], 0)} | {facts[0]['params']:,} |"
        )
    calib = out / "calibrate.json"
    if calib.exists():
        scale = json.loads(calib.read_text())
        for label, r in scale["rows"].items():
            acc = f"{r['conditional_accuracy']:.3f}" if "conditional_accuracy" in r else ""
            lines.append(f"| | *{label}* | {r['fd']:.1f} | | {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} "
                         f"| {r['coverage']:.3f} | | | {acc} | | | | |")  # fmt: skip
        if "test_accuracy" in scale:  # the ceiling of a model that generalises: held-out images with their labels
            lines.append(f"| | *test images (held out)* | | | | | | | | | {scale['test_accuracy']:.3f} | | | | |")
    lines += ["", *per_seed(rows, seeds)]
    if len(seeds) > 1:
        gauss = json.loads(calib.read_text())["rows"]["Gaussian fit to pixels"]["fd"] if calib.exists() else None
        lines += ["", *against_the_notes(fds, gauss)]
        lines += ["", *two] if (two := dai_and_wipf(fds)) else []
        lines += ["", *low] if (low := bf16_against_fp32(fds)) else []
    return "\n".join(lines) + "\n"


def per_seed(rows: list[tuple], seeds: list[int]) -> list[str]:
    """Every seed's figures behind the table's means (seeds in the order given), from the table's rows."""
    lines = [
        f"Per seed ({', '.join(map(str, seeds))}):",
        "",
        "| model | FD, raw G | FD, EMA G | largest class | conditional accuracy |",
        "|---|---|---|---|---|",
    ]

    def each(values: list, digits: int) -> str:
        return ", ".join(f"{v:.{digits}f}" for v in values if v is not None) or "–"

    for name, q, _, ema in rows:
        cells = [each([x["fd"] for x in q], 1), each(ema, 1), each([max(x["class_hist"]) for x in q], 3),
                 each([x.get("conditional_accuracy") for x in q], 3)]  # fmt: skip
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def against_the_notes(fds: dict[str, list[float]], gauss: float | None) -> list[str]:
    """Each model beyond the notes against the notes' VAE and GAN and the pixel Gaussian: the gap in mean FD
    in pooled seed sd, clearly below at 2 sd or more, else a tie (the pixel Gaussian has no seeds: the model's sd)."""
    references = {
        "the notes' VAE": fds.get("vae"),
        "the notes' GAN": fds.get("gan"),
        "the pixel Gaussian": [gauss] if gauss else None,
    }
    lines = ["Against the notes' models (mean FD below them; the gap in pooled seed sd; clear at 2 sd or more):", ""]
    for name, values in fds.items():
        if name in ("gan", "vae"):
            continue
        parts = [f"{label} {gap(values, ref)}" for label, ref in references.items() if ref]
        lines.append(f"- {name}: " + "; ".join(parts))
    return lines


def gap(values: list[float], ref: list[float]) -> str:
    """How far values' mean FD is below ref's, in pooled seed sd (one reference value: values' own sd)."""
    diff = statistics.mean(ref) - statistics.mean(values)
    sd = pooled_sd(values, ref) if len(ref) > 1 else statistics.stdev(values)
    if sd == 0:
        return f"{diff:+.1f}"
    verdict = "clearly below" if diff >= 2 * sd else ("clearly above" if diff <= -2 * sd else "a tie")
    return f"{diff:+.1f} ({diff / sd:+.1f} sd: {verdict})"


def dai_and_wipf(fds: dict[str, list[float]]) -> list[str]:
    """Dai & Wipf's order: each second stage against its own first stage, and the learned-γ (σ-VAE) 2-Stage
    against the fixed-variance ones."""
    stages = [n for n in fds if ROWS[n].first in fds]
    if not stages:
        return []
    lines = ["2-Stage (Dai & Wipf: the second stage helps, and helps most after a learned decoder variance):", ""]
    for name in stages:
        first = ROWS[name].first
        lines.append(f"- {name} against its first stage {first}: {gap(fds[name], fds[first])}")
    if "sigma-vae+2stage" in stages:
        for other in (n for n in stages if n != "sigma-vae+2stage"):
            lines.append(f"- sigma-vae+2stage against {other}: {gap(fds['sigma-vae+2stage'], fds[other])}")
    return lines


def bf16_against_fp32(fds: dict[str, list[float]]) -> list[str]:
    """Each bf16 row against the same model in fp32: bf16 is offered where the gap is a tie."""
    pairs = [(n, ROWS[n].fp32) for n in fds if ROWS[n].fp32 in fds]
    if not pairs:
        return []
    lines = ['bf16 autocast (train.precision = "bf16") against fp32, the same model and seeds (a tie: equal FD):', ""]
    return lines + [f"- {low} against {full}: {gap(fds[low], fds[full])}" for low, full in pairs]


def curves(out: Path, names: list[str], seeds: list[int], earlier: Path | None = None) -> Path:
    """FD against CPU-seconds of training: each model's snapshots (mean ± sd over seeds) and its final point
    (mean CPU-s and FD over seeds); with the points of the shorter zoo these runs were continued from (earlier),
    whose other models are drawn too, ending where it ended: every row on one figure, a colour per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    own = [n for n in ROWS if not ROWS[n].base]  # a 2-Stage row as a square, a bf16 row dashed, in their base's colour
    colour = {n: f"C{own.index(ROWS[n].base or n) % 10}" for n in ROWS}
    for name in ROWS:
        folders = [f for f in (earlier, out if name in names else None) if f is not None]
        points: dict[float, list[float]] = {}
        for folder in folders:
            finals: list[tuple[float, float]] = []
            for seed in seeds:
                for path in sorted(folder.glob(f"{name}-s{seed}-cpu-*.json")):
                    if path.stem.endswith("-ema"):
                        continue
                    at = float(path.stem.rsplit("cpu-", 1)[1].rstrip("s"))
                    points.setdefault(at, []).append(json.loads(path.read_text())["sample_quality"]["fd"])
                final = folder / f"{name}-s{seed}.json"
                if final.exists():
                    finals.append((run_facts(folder, name, seed)["cpu_s"], json.loads(final.read_text())["sample_quality"]["fd"]))
            if finals:  # the seeds' runs end at slightly different CPU-s: one point at their mean
                points[statistics.mean(x for x, _ in finals)] = [fd for _, fd in finals]
        if not points:
            continue
        xs = sorted(points)
        means = [statistics.mean(points[x]) for x in xs]
        sds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0 for x in xs]
        style = dict(marker="s", ls="none") if ROWS[name].first else dict(marker="o")
        if ROWS[name].fp32:
            style = dict(marker="^", ls="--")
        ax.errorbar(xs, means, yerr=sds, capsize=2, label=name, color=colour[name], **style)
    calib = out / "calibrate.json"
    if calib.exists():
        gauss = json.loads(calib.read_text())["rows"].get("Gaussian fit to pixels")
        if gauss:
            ax.axhline(gauss["fd"], color="grey", ls=":", label="Gaussian fit to pixels")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("CPU-seconds of training (one core)")
    ax.set_ylabel("FD in genlab's classifier features (lower: better)")
    spread = f"mean ± sd over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    ax.set_title(f"FD against training cost, {spread}", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def picture(out: Path, names: list[str], seed: int, per_row: int = 12) -> Path:
    """One row of samples per model (the seed's run, the eval's generator seed), labelled."""
    from PIL import Image, ImageDraw

    from genlab.io import make_grid
    from genlab.runs import load_run, load_stage2
    from genlab.sampling import generate

    rows, labels = [], []
    for name in names:
        folder = out / "runs" / ROWS[name].folder(name, seed)
        if not (out / f"{name}-s{seed}.json").exists():
            continue
        config_, model, _ = load_run(str(folder), "cpu")
        if ROWS[name].first:
            model = load_stage2(folder, config_, model)
        images = generate(model, per_row, seed=0)
        top = (images.shape[-1] - 28) // 2  # Fashion-MNIST's own size: the VAEs' 32x32 padding is cropped off
        rows.append(make_grid(images[..., top : top + 28, top : top + 28], nrow=per_row))
        labels.append(name)
    scale, label_w = 3, 130
    canvas = Image.new("L", (label_w + rows[0].shape[1] * scale, sum(r.shape[0] for r in rows) * scale), 255)
    draw, y = ImageDraw.Draw(canvas), 0
    for grid, label in zip(rows, labels):
        img = Image.fromarray(grid[..., 0]).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
        canvas.paste(img, (label_w, y))
        draw.text((6, y + img.height // 2 - 6), label, fill=0)
        y += img.height
    path = out / "zoo.png"
    canvas.save(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5, help="epochs of batch 64 per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default=",".join(ROWS), help="rows to run, in this order (longest first packs best)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once, each on one core")
    p.add_argument("--out", type=Path, default=Path("runs/zoo"))
    p.add_argument("--report-only", action="store_true", help="write the table and figures from what is scored")
    p.add_argument("--continue-from", type=Path, help="a zoo folder of fewer epochs whose runs this one resumes")
    args = p.parse_args()
    names, seeds = args.models.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"zoo: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        calib, earlier = args.out / "calibrate.json", args.continue_from and args.continue_from / "calibrate.json"
        if not calib.exists() and earlier and earlier.exists():
            shutil.copyfile(earlier, calib)  # the same test images and classifier: the same reference rows
        elif not calib.exists():
            run([*GENLAB, "calibrate", "--n", "10000", "--json", str(calib)], args.out / "calibrate.log")
        # Second stages last: each waits for its first stage's score.
        jobs = sorted(((n, s) for s in seeds for n in names), key=lambda job: bool(ROWS[job[0]].first))  # stable
        work = lambda job: train_and_score(*job, args.epochs, args.out, args.continue_from)  # noqa: E731
        with ThreadPoolExecutor(args.parallel) as pool:
            for (n, s), _ in zip(jobs, pool.map(work, jobs)):
                print(f"zoo: {n} seed {s} scored", flush=True)
    names = [n for n in ROWS if n in names]  # the table in its fixed order, whatever order the runs took
    if not any((args.out / f"{n}-s{s}.json").exists() for n in names for s in seeds):
        sys.exit(f"zoo: no scored run of {', '.join(names)} in {args.out}; run it without --report-only first")
    machine = subprocess.run([*GENLAB, "--version"], capture_output=True, text=True).stdout.strip().split("device ", 1)[-1]
    text = table(args.out, names, seeds, args.epochs, machine)
    (args.out / "table.md").write_text(text)
    print(text)
    print(f"zoo: wrote {curves(args.out, names, seeds, args.continue_from)} and {picture(args.out, names, seeds[0])}")


if __name__ == "__main__":
    main()
