# Two commands for a new user:  `make run` (the main job)  and  `make test`.
# `make test-fast`: the suite without the tests marked slow (torchrun, compile, subprocesses, browser).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build; on a CUDA machine set TORCH="torch==2.13.0 --index-url <your CUDA wheel index>".
TORCH  ?= torch==2.13.0
STAMP  := $(shell date +%Y%m%d-%H%M%S)
RUN    ?= runs/main-$(STAMP)
BUDGET ?= 150
FASHION = /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data run test test-fast table bench sweep shapes fidelity zoo clean

$(BIN)/genlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,tensorboard]"
	touch $@

setup: $(BIN)/genlab

# Fashion-MNIST from Debian's package when it is missing (genlab would otherwise download it).
data:
	@if [ ! -f $(FASHION) ] && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
	  || echo "genlab: apt-get failed; genlab will download Fashion-MNIST instead"; fi

run: setup data
	$(BIN)/genlab train vae --config configs/vae_fashion.toml --time-budget $(BUDGET) --out $(RUN)/vae
	$(BIN)/genlab train gan --config configs/gan_fashion.toml --time-budget $(BUDGET) --out $(RUN)/gan
	$(BIN)/genlab sample $(RUN)/vae --n 64 --out $(RUN)/vae/samples_64.png
	$(BIN)/genlab sample $(RUN)/gan --n 64 --out $(RUN)/gan/samples_64.png
	$(BIN)/genlab reconstruct $(RUN)/vae --out $(RUN)/vae/reconstructions.png
	$(BIN)/genlab interpolate $(RUN)/vae --out $(RUN)/vae/interpolations.png
	$(BIN)/genlab report $(RUN)/vae $(RUN)/gan --out $(RUN)/report.html
	@echo "genlab: the report of both runs: $(RUN)/report.html (open it in a browser; pictures in $(RUN)/vae and $(RUN)/gan)"

test: setup
	$(BIN)/ruff check src tests
	$(BIN)/pytest

test-fast: setup
	$(BIN)/ruff check src tests
	$(BIN)/pytest -m "not slow"

# The README's results table (~25 min on 2 CPU cores) and performance figures.
table: setup data
	GENLAB=$(BIN)/genlab PATH=$(BIN):$$PATH scripts/table.sh runs/table

# The beta trade-off on shapes (offline): beta 0.25, 1, 4 per image at 32x32, the normalised strengths of
# beta = 1, 4, 16 at 64x64 (Locatello et al.'s range), 3 seeds, 3000 steps of batch 256 each (~2.5 min of
# training a run on 2 cores at the 20.8 steps/s timed for configs/beta_vae_shapes.toml).
SWEEP ?= runs/sweep-shapes
sweep: setup
	$(BIN)/genlab sweep vae --config configs/beta_vae_shapes.toml --values loss.beta=0.25,1,4 --seeds 3 \
	  --set train.max_steps=3000 --out $(SWEEP)

# The shipped disentanglement configs on shapes at the steps SHAPES_BUDGET s of 2-core training buy,
# SHAPES_SEEDS seeds, one run at a time on both cores, scored with the full protocol (docs/disentanglement.md);
# six rows x 3 seeds x (15 min + 2-5 min of evaluation): about 5.5 hours on 2 cores.
SHAPES_BUDGET ?= 900
SHAPES_SEEDS ?= 0,1,2
shapes: setup
	$(BIN)/python scripts/shapes.py --budget $(SHAPES_BUDGET) --seeds $(SHAPES_SEEDS) --out runs/shapes

# The notes' GAN over whole runs: genlab's CLI vs the notes' loop transcribed, 5 seeds, 10 and 20 epochs
# (~80 min: two calls on disjoint seeds at once, one core each; the last call only writes the table).
fidelity: setup data
	OMP_NUM_THREADS=1 $(BIN)/python scripts/fidelity.py --seeds 0,2,4 --out runs/fidelity & \
	OMP_NUM_THREADS=1 $(BIN)/python scripts/fidelity.py --seeds 1,3 --out runs/fidelity; wait
	$(BIN)/python scripts/fidelity.py --seeds 0,1,2,3,4 --out runs/fidelity

# The notes' models and their fixes at equal epochs: ZOO_EPOCHS epochs of batch 64 per run, ZOO_SEEDS,
# two runs at a time on one core each, snapshots scored at 30-480 CPU-s; then the longer setting,
# ZOO_LONG_EPOCHS for ZOO_LONG_MODELS, resuming those runs (docs/results.md gives the cost).
ZOO_EPOCHS ?= 5
ZOO_SEEDS ?= 0,1,2
ZOO_LONG_EPOCHS ?= 20
ZOO_LONG_MODELS ?= gan,vae,dcgan,sngan,wgan-gp,cgan,cvae
zoo: setup data
	$(BIN)/python scripts/zoo.py --epochs $(ZOO_EPOCHS) --seeds $(ZOO_SEEDS) --parallel 2 --out runs/zoo
	$(BIN)/python scripts/zoo.py --epochs $(ZOO_LONG_EPOCHS) --models $(ZOO_LONG_MODELS) --seeds $(ZOO_SEEDS) \
	  --parallel 2 --continue-from runs/zoo --out runs/zoo-long

bench: setup
	$(BIN)/genlab bench vae gan --json runs/bench.json

clean:
	rm -rf $(VENV) runs
