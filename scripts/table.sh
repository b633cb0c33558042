#!/usr/bin/env bash
# The README's results table: train the shipped configs for a stated budget, evaluate, aggregate.
# Usage: scripts/table.sh [OUT_DIR]   (about 25 minutes on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/table}
GENLAB=${GENLAB:-genlab}
VAE_EPOCHS=${VAE_EPOCHS:-3}
GAN_EPOCHS=${GAN_EPOCHS:-20}
mkdir -p "$OUT"
timed() { local name=$1; shift; local t0=$SECONDS; "$@"; echo "$name $((SECONDS - t0))" >> "$OUT/seconds.txt"; }
: > "$OUT/seconds.txt"
timed calibrate $GENLAB calibrate --n 10000 --json "$OUT/calibrate.json"
timed vae_train $GENLAB train vae --config configs/vae_fashion.toml --epochs "$VAE_EPOCHS" --out "$OUT/vae" --quiet
timed vae_eval $GENLAB eval "$OUT/vae" --n 10000 --k 1000 --nll-n 200 --json "$OUT/vae.json"
timed beta_vae_train $GENLAB train vae --config configs/beta_vae_fashion.toml --epochs "$VAE_EPOCHS" --out "$OUT/beta_vae" --quiet
timed beta_vae_eval $GENLAB eval "$OUT/beta_vae" --n 10000 --k 1000 --nll-n 200 --json "$OUT/beta_vae.json"
for seed in 0 1 2; do
  timed "gan_s${seed}_train" $GENLAB train gan --config configs/gan_fashion.toml --epochs "$GAN_EPOCHS" --seed "$seed" --out "$OUT/gan_s$seed" --quiet
  timed "gan_s${seed}_eval" $GENLAB eval "$OUT/gan_s$seed" --n 10000 --json "$OUT/gan_s$seed.json"
done
python3 scripts/table.py "$OUT" | tee "$OUT/table.md"
