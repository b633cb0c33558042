"""Aggregate scripts/table.sh's JSON files into the README's Markdown table."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(out: Path) -> None:
    seconds = dict(line.split() for line in (out / "seconds.txt").read_text().splitlines())
    rows = [("VAE", ["vae"]), ("β-VAE (β=4, latent 10)", ["beta_vae"]), ("GAN (3 seeds)", ["gan_s0", "gan_s1", "gan_s2"])]
    print(
        "| model | train steps | train s | FD ↓ | precision | recall | density | coverage | IS-style "
        "| −ELBO / −log p(x) (nats) | train seeds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, names in rows:
        results = [json.loads((out / f"{n}.json").read_text()) for n in names]
        q = [r["sample_quality"] for r in results]
        train_s = mean_std([float(seconds[f"{n}_train"]) for n in names], 0)
        nll = "–"
        if "likelihood" in results[0]:
            lk = results[0]["likelihood"]
            nll = f"{lk['neg_elbo']:.1f} / {lk['nll_iw']:.1f} (k={lk['k']}, n={lk['n']})"
        print(
            f"| {label} | {results[0]['run_step']} | {train_s} | {mean_std([x['fd'] for x in q], 2)} | "
            f"{mean_std([x['precision'] for x in q], 3)} | {mean_std([x['recall'] for x in q], 3)} | "
            f"{mean_std([x['density'] for x in q], 3)} | {mean_std([x['coverage'] for x in q], 3)} | "
            f"{mean_std([x['is_mean'] for x in q], 2)} | {nll} | {', '.join(str(r['train_seed']) for r in results)} |"
        )
    cal = json.loads((out / "calibrate.json").read_text())
    for name, r in cal["rows"].items():
        print(
            f"| *{name}* | – | – | {r['fd']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} "
            f"| {r['coverage']:.3f} | {r['is_mean']:.2f} | – | – |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/table"))
