"""DCI on a run's own evaluation codes, fitted twice: by genlab's trees (genlab.eval.boosting) and by sklearn's
GradientBoostingClassifier, each timed. Run it with nothing else on the machine.

Usage: python scripts/dci_trees.py RUN [OUT.json]    (a VAE run on a factor data set, e.g. shapes)
"""

from __future__ import annotations

import json
import sys
import time

from genlab.cli import main
from genlab.eval import disentanglement as dm


def both_fits(out: dict, fit=dm.dci):
    def dci(codes, factors, seed=0, **kw):
        for name, sklearn_trees in (("genlab", False), ("sklearn", True)):
            t = time.perf_counter()
            scores = fit(codes, factors, seed=seed, sklearn_trees=sklearn_trees, **kw)
            out[name] = {"seconds": round(time.perf_counter() - t, 1), **scores}
        return out["genlab"]

    return dci


if __name__ == "__main__":
    run, path = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "dci_trees.json"
    out: dict = {}
    dm.dci = both_fits(out)
    sys.argv = ["genlab", "eval", run, "--n", "1000", "--nll-n", "200", "--k", "10", "--chen-samples", "0"]
    main()
    print(json.dumps(out, indent=1))
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
