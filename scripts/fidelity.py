"""Is genlab's notes' GAN the notes' GAN over whole runs, not only over ten steps?

For each seed, train both sides on Fashion-MNIST and score every one with `genlab eval --n 10000`:
- genlab: `genlab train gan --config configs/gan_fashion.toml`, to the first epoch count, then resumed
  to the next (a resumed run continues bit-identically);
- notes: the notes' classes and loop (PyTorch-GAN's gan.py) transcribed below, with torchvision's
  ToTensor + Normalize done by hand (genlab does not need torchvision); its generator is saved as a
  genlab run so that the same `genlab eval` scores it.

Usage: python scripts/fidelity.py [--seeds 0,1,2,3,4] [--epochs 10,20] [--out runs/fidelity]
                                  [--sides genlab,notes] [--set KEY=VALUE ...]
`--set` goes to the genlab side only (for bisecting one difference at a time).
Writes OUT/<side>-s<seed>-e<epochs>.json (and .seconds) and OUT/table.md (about 70 minutes on
2 CPU cores for the defaults). Runs already scored are skipped, so an interrupted call continues,
and calls on disjoint seeds may share OUT (e.g. two at once with OMP_NUM_THREADS=1 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy import stats
from torch.autograd import Variable

ROOT = Path(__file__).resolve().parent.parent
GENLAB = [sys.executable, "-m", "genlab"]
CONFIG = ROOT / "configs" / "gan_fashion.toml"


# --- the notes' Listing 6 and 7 and their training loop, as written (opt.* filled in) -----------------
class opt:  # noqa: N801 - the notes read these as opt.latent_dim etc.
    latent_dim, img_size, channels, lr, b1, b2, batch_size = 100, 28, 1, 0.0002, 0.5, 0.999, 64


img_shape = (opt.channels, opt.img_size, opt.img_size)


class Generator(nn.Module):
    def __init__(self):
        super().__init__()

        def block(in_feat, out_feat, normalize=True):
            layers = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat, 0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(opt.latent_dim, 128, normalize=False),
            *block(128, 256),
            *block(256, 512),
            *block(512, 1024),
            nn.Linear(1024, int(np.prod(img_shape))),
            nn.Tanh(),
        )

    def forward(self, z):
        img = self.model(z)
        img = img.view(img.size(0), *img_shape)
        return img


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()

        self.model = nn.Sequential(
            nn.Linear(int(np.prod(img_shape)), 512),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 1),
            nn.Sigmoid(),
        )

    def forward(self, img):
        img_flat = img.view(img.size(0), -1)
        validity = self.model(img_flat)
        return validity


class FashionMNIST(torch.utils.data.Dataset):
    """datasets.FashionMNIST(train=True, transform=[Resize(28), ToTensor(), Normalize([0.5], [0.5])])."""

    def __init__(self, images: torch.Tensor):
        self.images = images  # (N, 1, 28, 28) uint8; Resize(28) leaves 28x28 images as they are

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i].float().div(255)  # ToTensor
        return (x - 0.5) / 0.5, 0  # Normalize([0.5], [0.5])


def notes_loop(seed: int, epochs: list[int], save) -> None:
    """gan.py's training loop; calls save(generator, discriminator, epoch, step) after each epoch in epochs."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    from genlab.config import DataConfig
    from genlab.data import load_dataset

    train, _ = load_dataset(DataConfig(dataset="fashion-mnist"), 1, 28)
    generator, discriminator = Generator(), Discriminator()
    adversarial_loss = torch.nn.BCELoss()
    optimizer_G = torch.optim.Adam(generator.parameters(), lr=opt.lr, betas=(opt.b1, opt.b2))
    optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=opt.lr, betas=(opt.b1, opt.b2))
    dataloader = torch.utils.data.DataLoader(FashionMNIST(train.images), batch_size=opt.batch_size, shuffle=True)
    Tensor = torch.FloatTensor
    step = 0
    for epoch in range(max(epochs)):
        for _i, (imgs, _) in enumerate(dataloader):
            valid = Variable(Tensor(imgs.size(0), 1).fill_(1.0), requires_grad=False)
            fake = Variable(Tensor(imgs.size(0), 1).fill_(0.0), requires_grad=False)
            real_imgs = Variable(imgs.type(Tensor))

            optimizer_G.zero_grad()
            z = Variable(Tensor(np.random.normal(0, 1, (imgs.shape[0], opt.latent_dim))))
            gen_imgs = generator(z)
            g_loss = adversarial_loss(discriminator(gen_imgs), valid)
            g_loss.backward()
            optimizer_G.step()

            optimizer_D.zero_grad()
            real_loss = adversarial_loss(discriminator(real_imgs), valid)
            fake_loss = adversarial_loss(discriminator(gen_imgs.detach()), fake)
            d_loss = (real_loss + fake_loss) / 2
            d_loss.backward()
            optimizer_D.step()
            step += 1
        if epoch + 1 in epochs:
            save(generator, discriminator, epoch + 1, step)


# --- driving both sides -------------------------------------------------------------------------------
def save_as_run(run: Path, seed: int, generator: nn.Module, discriminator: nn.Module, epoch: int, step: int) -> None:
    """The notes' networks as a genlab run (their weights load key for key), so genlab eval scores them."""
    from genlab.checkpoint import save_checkpoint
    from genlab.configfile import load_config
    from genlab.models import GAN

    config = load_config("gan", CONFIG, {"train.seed": seed, "train.epochs": epoch, "loss.logits": False})
    model = GAN(**{k: getattr(config.model, k) for k in ("latent_dim", "img_shape", "g_hidden_dims", "d_hidden_dims", "bn_eps")})
    model.generator.load_state_dict(generator.state_dict())
    model.discriminator.load_state_dict(discriminator.state_dict())
    shutil.rmtree(run, ignore_errors=True)
    save_checkpoint(run, model, config.to_dict(), {"step": step, "epoch": epoch})


def evaluate(run: Path, out: Path) -> None:
    subprocess.run([*GENLAB, "eval", str(run), "--n", "10000", "--json", str(out)], check=True, stdout=subprocess.DEVNULL)


def record_seconds(out: Path, name: str, seconds: float) -> None:
    """Training seconds of one scored run, beside its score (one file each: several callers may run at once)."""
    (out / f"{name}.seconds").write_text(f"{seconds:.1f}\n")


def genlab_side(seed: int, epochs: list[int], out: Path, sets: list[str]) -> None:
    run = out / "runs" / f"genlab-s{seed}"
    extra = [a for kv in sets for a in ("--set", kv)]
    for n, e in enumerate(epochs):
        score = out / f"genlab-s{seed}-e{e}.json"
        if score.exists():
            continue
        if n == 0:
            shutil.rmtree(run, ignore_errors=True)
            cmd = [*GENLAB, "train", "gan", "--config", str(CONFIG), "--seed", str(seed), "--epochs", str(e), *extra]
            cmd += ["--out", str(run), "--quiet"]
        else:
            cmd = [*GENLAB, "train", "gan", "--resume", str(run), "--epochs", str(e), "--quiet"]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        record_seconds(out, f"genlab-s{seed}-e{e}", time.monotonic() - t0)
        evaluate(run, score)


def notes_side(seed: int, epochs: list[int], out: Path) -> None:
    if all((out / f"notes-s{seed}-e{e}.json").exists() for e in epochs):
        return
    t0 = time.monotonic()
    scored = []

    def save(g: nn.Module, d: nn.Module, epoch: int, step: int) -> None:
        record_seconds(out, f"notes-s{seed}-e{epoch}", time.monotonic() - t0 - sum(scored))
        t1 = time.monotonic()
        run = out / "runs" / f"notes-s{seed}-e{epoch}"
        save_as_run(run, seed, g, d, epoch, step)
        evaluate(run, out / f"notes-s{seed}-e{epoch}.json")
        scored.append(time.monotonic() - t1)

    notes_loop(seed, epochs, save)


def mean_std(values: list[float], digits: int = 1) -> str:
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "–"


def table(out: Path, seeds: list[int], epochs: list[int], sides: list[str]) -> str:
    """Per epoch count: each side's FDs by seed, mean ± std, coverage, and whether the two differ."""
    seconds = {p.stem: float(p.read_text()) for p in out.glob("*.seconds")}
    lines = [
        "| epochs | side | FD by seed (" + ", ".join(map(str, seeds)) + ") | FD mean ± std | coverage | recall "
        "| largest class share | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for e in epochs:
        fds = {}
        for side in sides:
            found = [(s, out / f"{side}-s{s}-e{e}.json") for s in seeds]
            rows = [(s, json.loads(p.read_text())["sample_quality"]) for s, p in found if p.exists()]
            if not rows:
                continue
            fd = [q["fd"] for _, q in rows]
            fds[side] = fd
            secs = [seconds[k] for s, _ in rows if (k := f"{side}-s{s}-e{e}") in seconds]
            lines.append(
                f"| {e} | {side} | {', '.join(f'{x:.1f}' for x in fd)} | {mean_std(fd)} "
                f"| {mean_std([q['coverage'] for _, q in rows], 3)} | {mean_std([q['recall'] for _, q in rows], 3)} "
                f"| {mean_std([max(q['class_hist']) for _, q in rows], 3)} | {mean_std(secs, 0)} |"
            )
        if len(fds) == 2 and all(len(v) > 1 for v in fds.values()):
            a, b = fds.values()
            u = stats.mannwhitneyu(a, b, alternative="two-sided", method="exact")
            t = stats.ttest_ind(a, b, equal_var=False)
            spread_test = stats.levene(a, b, center="median")  # Brown-Forsythe: do the seed-to-seed spreads differ?
            spread = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
            gap = statistics.mean(a) - statistics.mean(b)
            verdicts.append(
                f"- {e} epochs: mean FD {' − '.join(fds)} = {gap:+.1f} = {gap / spread:+.2f} pooled seed std "
                f"({spread:.1f}); Mann-Whitney U = {u.statistic:.0f}, p = {u.pvalue:.3f}; Welch t, p = {t.pvalue:.3f}; "
                f"equal spreads (Brown-Forsythe), p = {spread_test.pvalue:.3f}"
            )
    return "\n".join(lines + [""] + verdicts) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", default="10,20")
    p.add_argument("--sides", default="genlab,notes")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    p.add_argument("--table-seeds", help="seeds the table shows (default: --seeds); for runs split over several calls")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = sorted(int(e) for e in args.epochs.split(","))
    sides = args.sides.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:  # seed by seed, both sides, so that a partial result is balanced
        for side in sides:
            if side == "genlab":
                genlab_side(seed, epochs, args.out, args.sets)
            else:
                notes_side(seed, epochs, args.out)
            print(f"fidelity: seed {seed} {side} done", flush=True)
    text = table(args.out, [int(s) for s in args.table_seeds.split(",")] if args.table_seeds else seeds, epochs, sides)
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
