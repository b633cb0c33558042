"""The notes' models and their fixes, trained under one wall budget on Fashion-MNIST and scored alike.

Usage: python scripts/zoo.py [--budget 150] [--seeds 0,1,2] [--parallel 2] [--models gan,dcgan,...] [--out runs/zoo]

Every model trains for --budget seconds of wall time from its shipped config (seed by seed), then
`genlab eval --n 10000` scores it in the shipped classifier's features. With --parallel 2 on a
2-core machine two runs go at once, each on one core (OMP_NUM_THREADS=1), so every model gets
the same compute. Writes OUT/<model>-s<seed>.json, OUT/table.md and OUT/zoo.png (a row of samples
per model). Runs already scored are skipped, so an interrupted call continues.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
GENLAB = [sys.executable, "-m", "genlab"]
MODELS = {  # name: (family, config, what it is)
    "gan": ("gan", "gan_fashion.toml", "the notes' MLP GAN"),
    "vae": ("vae", "vae_fashion.toml", "the notes' VAE (fixed-variance Gaussian decoder)"),
    "sigma-vae": ("vae", "sigma_vae_fashion.toml", "σ-VAE: the notes' VAE with a calibrated decoder"),
    "dcgan": ("dcgan", "dcgan_fashion.toml", "DCGAN"),
    "sngan": ("sngan", "sngan_fashion.toml", "SNGAN (spectral norm, hinge)"),
    "wgan-gp": ("wgan-gp", "wgan_gp_fashion.toml", "WGAN-GP"),
    "cgan": ("cgan", "cgan_fashion.toml", "class-conditional GAN (projection D)"),
    "cvae": ("cvae", "cvae_fashion.toml", "class-conditional VAE"),
    # Not trained under the budget: a second stage fitted afterwards on each `vae` run's codes.
    "vae+2stage": ("vae", None, "the notes' VAE sampled through a 2-Stage VAE second stage"),
}
STAGE2_EPOCHS = 5


def train_and_score(name: str, seed: int, budget: float, out: Path) -> None:
    score = out / f"{name}-s{seed}.json"
    if score.exists():
        return
    family, config, _ = MODELS[name]
    run = out / "runs" / f"{name}-s{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if config is None:  # the 2-Stage VAE: on top of the vae run of this seed, once that is scored
        first = out / "runs" / f"vae-s{seed}"
        while not (out / f"vae-s{seed}.json").exists():
            time.sleep(5)
        subprocess.run(
            [*GENLAB, "stage2", str(first), "--epochs", str(STAGE2_EPOCHS)], check=True, env=env, stdout=subprocess.DEVNULL
        )
        evaluate = [*GENLAB, "eval", str(first), "--stage2", "--n", "10000", "--nll-n", "200", "--k", "100", "--json", str(score)]
        subprocess.run(evaluate, check=True, env=env, stdout=subprocess.DEVNULL)
        return
    train = [*GENLAB, "train", family, "--config", str(ROOT / "configs" / config), "--seed", str(seed)]
    train += ["--time-budget", str(budget), "--epochs", "1000", "--out", str(run), "--quiet"]
    if (run / "config.json").exists():
        train = [*GENLAB, "train", family, "--resume", str(run), "--time-budget", str(budget), "--quiet"]
    subprocess.run(train, check=True, env=env, stdout=subprocess.DEVNULL)
    evaluate = [*GENLAB, "eval", str(run), "--n", "10000", "--nll-n", "200", "--k", "100", "--json", str(score)]
    subprocess.run(evaluate, check=True, env=env, stdout=subprocess.DEVNULL)


def model_facts(name: str, run: Path) -> dict[str, float]:
    """Parameters, sampling FLOPs per image, steps and mean training images/s of one run."""
    from torch.utils.flop_counter import FlopCounterMode

    from genlab.runs import load_run

    config, model, state = load_run(str(run), "cpu")
    if MODELS[name][1] is None:
        from genlab.runs import load_stage2

        model = load_stage2(run, config, model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.sample(1)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]  # the first window holds start-up
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "sample_mflops": counter.get_total_flops() / 1e6,
        "steps": state["step"],
        "images_per_s": statistics.mean(speeds) if speeds else float("nan"),
    }


def mean_std(values: list[float], digits: int) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "–"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(out: Path, names: list[str], seeds: list[int], budget: float) -> str:
    lines = [
        f"Fashion-MNIST, {budget:.0f} s of training per run on one CPU core, seeds {', '.join(map(str, seeds))}; "
        "`genlab eval --n 10000` against the first 10,000 test images in genlab's classifier features.",
        "",
        "| model | FD ↓ | precision | recall | density | coverage | IS-style | class accuracy | steps | train img/s "
        "| parameters | MFLOP/sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        found = [(s, out / f"{name}-s{s}.json") for s in seeds if (out / f"{name}-s{s}.json").exists()]
        if not found:
            continue
        q = [json.loads(p.read_text())["sample_quality"] for _, p in found]
        runs = [out / "runs" / f"{'vae' if MODELS[name][1] is None else name}-s{s}" for s, _ in found]
        facts = [model_facts(name, run) for run in runs]

        def col(key: str, d: int, q: list[dict] = q) -> str:
            return mean_std([x[key] for x in q], d)

        accuracy = col("conditional_accuracy", 3) if "conditional_accuracy" in q[0] else "–"
        lines.append(
            f"| {name}: {MODELS[name][2]} | {col('fd', 1)} | {col('precision', 3)} | {col('recall', 3)} | {col('density', 3)} "
            f"| {col('coverage', 3)} | {col('is_mean', 2)} "
            f"| {accuracy} | {mean_std([f['steps'] for f in facts], 0)} "
            f"| {mean_std([f['images_per_s'] for f in facts], 0)} | {facts[0]['params']:,} | {facts[0]['sample_mflops']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def picture(out: Path, names: list[str], seed: int, per_row: int = 12) -> Path:
    """One row of samples per model (the seed's run, fixed noise), labelled."""
    from PIL import Image, ImageDraw

    from genlab.io import make_grid
    from genlab.runs import load_run
    from genlab.sampling import generate

    rows, labels = [], []
    for name in names:
        run = out / "runs" / f"{'vae' if MODELS[name][1] is None else name}-s{seed}"
        if not (out / f"{name}-s{seed}.json").exists():
            continue
        config, model, _ = load_run(str(run), "cpu")
        if MODELS[name][1] is None:
            from genlab.runs import load_stage2

            model = load_stage2(run, config, model)
        images = generate(model, per_row, seed=0)
        size = 28  # Fashion-MNIST's own size: the VAEs' 32x32 padding is cropped off
        top = (images.shape[-1] - size) // 2
        rows.append(make_grid(images[..., top : top + size, top : top + size], nrow=per_row))
        labels.append(name)
    scale, label_w = 3, 110
    height = sum(r.shape[0] for r in rows) * scale
    canvas = Image.new("L", (label_w + rows[0].shape[1] * scale, height), 255)
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
    p.add_argument("--budget", type=float, default=150.0, help="training seconds per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--parallel", type=int, default=2, help="runs at once (each on one core)")
    p.add_argument("--out", type=Path, default=Path("runs/zoo"))
    args = p.parse_args()
    names, seeds = args.models.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"zoo: unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, s) for s in seeds for n in names if MODELS[n][1]] + [(n, s) for s in seeds for n in names if not MODELS[n][1]]
    with ThreadPoolExecutor(args.parallel) as pool:
        for (n, s), _ in zip(jobs, pool.map(lambda job: train_and_score(*job, args.budget, args.out), jobs)):
            print(f"zoo: {n} seed {s} scored", flush=True)
    text = table(args.out, names, seeds, args.budget)
    (args.out / "table.md").write_text(text)
    print(text)
    print(f"zoo: wrote {picture(args.out, names, seeds[0])}")


if __name__ == "__main__":
    main()
