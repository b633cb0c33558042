"""Disentanglement metrics as functions of arrays, after disentanglement_lib's protocols (Locatello et al. 2019).

Codes are (N, D) floats, factors (N, K) ints (class indices). Scores that need new batches with a
factor held fixed (the β-VAE and FactorVAE scores) take `represent`, a function from factor classes
(n, K) to codes (n, D): for a model on a data set, "render the images of these factors and encode
them". Every classifier is built with all its settings written out, so figures do not move when a
library changes its defaults (sklearn changed LogisticRegression's in 0.22; disentanglement_lib
issue #33). The settings are returned in PROTOCOL for the eval JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import joblib
import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from genlab.eval.boosting import FIXED_SETTINGS, BoostedTrees

Represent = Callable[[np.ndarray], np.ndarray]

# What disentanglement_lib ran: sklearn < 0.22 defaults, pinned (LogisticRegression was liblinear, L2 (l1_ratio 0),
# one-vs-rest; LinearSVC's dual formulation; GradientBoostingClassifier's 100 depth-3 trees).
LOGISTIC = {"solver": "liblinear", "l1_ratio": 0.0, "C": 1.0, "tol": 1e-4, "max_iter": 100, "fit_intercept": True}
LINEAR_SVC = {"C": 0.01, "class_weight": "balanced", "loss": "squared_hinge", "penalty": "l2", "dual": True, "tol": 1e-4}
LINEAR_SVC |= {"max_iter": 1000, "fit_intercept": True, "intercept_scaling": 1.0}
# (criterion stays sklearn's friedman_mse, the only one left: sklearn 1.9 deprecates setting it.)
GBT = {"loss": "log_loss", "learning_rate": 0.1, "n_estimators": 100, "subsample": 1.0}
GBT |= {"max_depth": 3, "min_samples_split": 2, "min_samples_leaf": 1, "max_features": None}
PROTOCOL = {
    "source": "disentanglement_lib (Locatello et al. 2019) metric configs; factors sampled from the whole set",
    "mig": {"num_train": 10_000, "bins": 20, "discretiser": "equal-width histogram per dimension", "units": "nats"},
    "sap": {"num_train": 10_000, "num_test": 5_000, "classifier": "LinearSVC one per (dimension, factor)", **LINEAR_SVC},
    "dci": {
        "num_train": 10_000,
        "num_test": 5_000,
        "classifier": "GradientBoostingClassifier one per factor",
        **GBT,
        "fitted_by": "genlab.eval.boosting (sklearn's trees without its per-node sort: the same trees, "
        "predictions and importances) for 3 classes or more; sklearn itself for 2",
    },
    "beta_vae_score": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000, "classifier": "one-vs-rest", **LOGISTIC},
    "factor_vae_score": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000},
    "factor_vae_prune_std": 0.05,
    "active_units": "Var_x(E_q[z_d|x]) > 0.01 (Burda et al. 2016); active_units_kl: mean KL of the dimension > 0.01 nats",
}


def sample_factors(sizes: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """n factor combinations, each factor uniform over its values: (n, K) int64."""
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


# ---------------------------------------------------------------- from codes and factors


def discretise(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each code dimension into `bins` equal-width bins over its own range, as disentanglement_lib does."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], bins)[1][:-1]
        out[:, d] = np.digitize(codes[:, d], edges)
    return out


def mutual_information(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(D, K) discrete mutual information in nats between each code dimension and each factor."""
    dims, count = range(discrete_codes.shape[1]), range(factors.shape[1])
    return np.array([[mutual_info_score(factors[:, k], discrete_codes[:, d]) for k in count] for d in dims])


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """(K,) entropy in nats of each factor's values over the rows: H(v_k), MIG's normaliser."""
    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def mutual_information_matrix(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The (D, K) matrix MIG takes its gaps from: I(z_d; v_k) in nats of each code dimension (its 20-bin
    histogram, as disentanglement_lib) with each factor, and the same divided by H(v_k) (0 for a constant factor)."""
    codes, factors = _check(codes, factors)
    mi = mutual_information(discretise(codes, bins), factors)
    entropy = factor_entropy(factors)
    return mi, np.divide(mi, entropy, out=np.zeros_like(mi), where=entropy > 0)


def mutual_information_gap(mi: np.ndarray, entropy: np.ndarray) -> float:
    """Mean over the varying factors of (largest - second largest) I(z_d; v_k) over dimensions, over H(v_k)."""
    top = np.sort(mi, axis=0)[::-1]
    varies = entropy > 0
    return float(np.mean((top[0, varies] - top[1, varies]) / entropy[varies]))


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018, disentanglement_lib's discretised variant).

    Mean over factors of (largest - second largest) MI between the factor and one code dimension,
    divided by the factor's entropy. Needs at least two code dimensions; constant factors are skipped.
    """
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least two code dimensions")
    return mutual_information_gap(mutual_information(discretise(codes, bins), factors), factor_entropy(factors))


def sap(codes: np.ndarray, factors: np.ndarray, num_train: int = 10_000, seed: int = 0, continuous: bool = False) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018).

    Discrete factors (the study's setting): the first num_train rows train one LinearSVC per (code
    dimension, factor) on that dimension alone, the rest test it. Continuous factors: the squared
    correlation on the training rows (disentanglement_lib's own tests use this form). Mean over
    factors of the gap between the two best dimensions' scores.
    """
    codes, factors = _check(codes, factors)
    train, test = _split(len(codes), num_train)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for d in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            x, y = codes[train, d], factors[train, k]
            if continuous:
                cov = np.cov(x, y, ddof=1)
                scores[d, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 and cov[1, 1] > 0 else 0.0
            elif len(np.unique(y)) > 1:  # a constant factor has nothing to predict
                svm = LinearSVC(random_state=seed, **LINEAR_SVC).fit(x[:, None], y)
                scores[d, k] = np.mean(svm.predict(codes[test, d : d + 1]) == factors[test, k])
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2])) if codes.shape[1] > 1 else float(np.mean(top[-1]))


def dci(
    codes: np.ndarray, factors: np.ndarray, num_train: int = 10_000, seed: int = 0, n_jobs: int = -1, sklearn_trees: bool = False
) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018), with gradient-boosted
    trees' importances as disentanglement_lib computes them; informativeness is the test accuracy. The trees
    are sklearn's, fitted by genlab.eval.boosting (~10x faster); sklearn_trees: by sklearn itself."""
    codes, factors = _check(codes, factors)
    train, test = _split(len(codes), num_train)
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    varies = [k for k in range(factors.shape[1]) if len(np.unique(factors[train, k])) > 1]

    ours = not sklearn_trees and all(GBT[key] == value for key, value in FIXED_SETTINGS.items())

    def fit(k: int) -> tuple[np.ndarray, float, float]:
        if ours and len(np.unique(factors[train, k])) > 2:
            model = BoostedTrees(GBT["n_estimators"], GBT["learning_rate"], GBT["max_depth"], seed=seed)
            model.fit(codes[train], factors[train, k])
            predicted = model.train_predictions_  # what predict() gives on them, bit for bit (test_boosting)
        else:
            model = GradientBoostingClassifier(random_state=seed, **GBT).fit(codes[train], factors[train, k])
            predicted = model.predict(codes[train])
        acc_train = np.mean(predicted == factors[train, k])
        return np.abs(model.feature_importances_), acc_train, np.mean(model.predict(codes[test]) == factors[test, k])

    # One independent model per factor (fixed seeds): run side by side, the same figures as one after another.
    # Most classes first (a tree per class per stage): on 2 workers dSprites' factors then end at 64 units, not 70.
    order = sorted(varies, key=lambda k: -len(np.unique(factors[train, k])))
    fitted = dict(zip(order, joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(fit)(k) for k in order)))
    fitted = [fitted[k] for k in varies]
    for k, (weights, _, _) in zip(varies, fitted):
        importance[:, k] = weights
    train_acc, test_acc = [f[1] for f in fitted], [f[2] for f in fitted]
    return {
        "disentanglement": dci_disentanglement(importance),
        "completeness": dci_completeness(importance),
        "informativeness": float(np.mean(test_acc)) if test_acc else 0.0,
        "informativeness_train": float(np.mean(train_acc)) if train_acc else 0.0,
    }


def dci_disentanglement(importance: np.ndarray) -> float:
    """Σ_i ρ_i (1 − H_K(P_i·)): how much each code dimension is about one factor, weighted by its importance."""
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def dci_completeness(importance: np.ndarray) -> float:
    """Σ_j ρ_j (1 − H_D(P_·j)): how much each factor is captured by one code dimension."""
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


# ---------------------------------------------------------------- Chen et al.'s own MIG, from posteriors


def beta_vae_score(
    represent: Represent,
    factor_sizes: Sequence[int],
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
) -> float:
    """β-VAE score (Higgins et al. 2017): accuracy with which a linear classifier names the factor that
    two batches share, from the mean absolute difference of their codes (on held-out points)."""
    rng = np.random.default_rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        features, labels = [], []
        for _ in range(n):
            k = rng.integers(len(factor_sizes))
            a, b = sample_factors(factor_sizes, batch_size, rng), sample_factors(factor_sizes, batch_size, rng)
            b[:, k] = a[:, k]
            features.append(np.mean(np.abs(represent(a) - represent(b)), axis=0))
            labels.append(k)
        return np.array(features), np.array(labels)

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    model = OneVsRestClassifier(LogisticRegression(random_state=seed, **LOGISTIC)).fit(x_train, y_train)
    return float(model.score(x_eval, y_eval))


def factor_vae_score(
    represent: Represent,
    factor_sizes: Sequence[int],
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_std: float = 0.05,
    global_var: np.ndarray | None = None,
) -> float:
    """FactorVAE score (Kim & Mnih 2018): with one factor fixed over a batch, the code dimension of
    least variance (relative to its variance over the data) votes for that factor; a majority-vote
    classifier from dimension to factor is scored on held-out votes. Dimensions whose standard
    deviation over the data is below prune_std take no part; with none left the score is 0. global_var:
    each dimension's variance over the data where the caller has it (then nothing is drawn for it)."""
    rng = np.random.default_rng(seed)
    if global_var is None:
        global_var = np.var(represent(sample_factors(factor_sizes, num_variance_estimate, rng)), axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_var) >= prune_std)
    if active.size == 0:
        return 0.0

    def votes(n: int) -> np.ndarray:
        table = np.zeros((len(factor_sizes), global_var.shape[0]), dtype=np.int64)
        for _ in range(n):
            k = rng.integers(len(factor_sizes))
            f = sample_factors(factor_sizes, batch_size, rng)
            f[:, k] = f[0, k]
            local_var = np.var(represent(f), axis=0, ddof=1)
            table[k, active[np.argmin(local_var[active] / global_var[active])]] += 1
        return table

    train, test = votes(num_train), votes(num_eval)
    classifier = np.argmax(train, axis=0)  # each dimension's majority factor
    dims = np.arange(train.shape[1])
    return float(test[classifier, dims].sum() / test.sum())


# ---------------------------------------------------------------- without factors


def gaussian_total_correlation(codes: np.ndarray) -> float:
    """TC of a Gaussian fitted to the codes: ½ (Σ log diag Σ − log det Σ), nats; 0 when dimensions are uncorrelated."""
    cov = np.atleast_2d(np.cov(np.asarray(codes, dtype=np.float64), rowvar=False))
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return float("inf")  # a degenerate code: some dimension is a function of the others
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - logdet))


def latent_usage(mu: np.ndarray, logvar: np.ndarray, threshold: float = 0.01) -> dict[str, object]:
    """Per-dimension KL to N(0, 1) (mean over the data, nats), and the active units by both definitions."""
    mu, logvar = np.asarray(mu, dtype=np.float64), np.asarray(logvar, dtype=np.float64)
    kl = 0.5 * np.mean(mu**2 + np.exp(logvar) - 1.0 - logvar, axis=0)
    variance = np.var(mu, axis=0)
    return {
        "kl_per_dim": [float(v) for v in kl],
        "active_units": int(np.sum(variance > threshold)),
        "active_units_kl": int(np.sum(kl > threshold)),
        "mean_variance_per_dim": [float(v) for v in variance],
    }


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes must be (N, D) and factors (N, K) with the same N; got {codes.shape} and {factors.shape}")
    return codes, factors.astype(np.int64)


def _split(n: int, num_train: int) -> tuple[slice, slice]:
    if not 0 < num_train < n:
        raise ValueError(f"need more than num_train={num_train} points for a test split, got {n}")
    return slice(0, num_train), slice(num_train, n)
