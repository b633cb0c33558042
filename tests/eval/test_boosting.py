"""genlab's gradient-boosted trees (DCI's classifier) against sklearn's GradientBoostingClassifier, tree by tree."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from genlab.eval import disentanglement as dm
from genlab.eval.boosting import BoostedTrees


def features(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Codes with what makes sklearn's splitter take its less common paths."""
    x = rng.standard_normal((n, 6))
    if kind == "ties":  # long runs of equal values: positions skipped, sums taken from the far end
        x[:, 1] = np.round(x[:, 1] * 2) / 2
        x[:, 3] = np.where(rng.random(n) < 0.9, 1.0, x[:, 3])
    elif kind == "constant":  # a feature that never splits, known constant below the root
        x[:, 2] = 0.5
    elif kind == "feature ties":  # equal proxies between features: sklearn's random draw order decides
        x[:, 4] = x[:, 0]
        x[:, 5] = np.exp(x[:, 1])
    elif kind == "close values":  # neighbours closer than sklearn's 1e-7 in float32 do not split
        x[:, 0] = 1.0 + np.round(x[:, 0] * 4) * 5e-8
    return x


@pytest.mark.parametrize("kind", ["continuous", "ties", "constant", "feature ties", "close values"])
def test_trees_predictions_and_importances_are_sklearns(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    n, classes, stages = 1200, 4, 12
    x = features(kind, n + 400, rng)
    labels = np.clip(((x[:, 0] + 0.7 * x[:, 1] + 0.5 * rng.standard_normal(len(x)) + 3) / 6 * classes).astype(int), 0, 3)
    settings = dm.GBT | {"n_estimators": stages}
    theirs = GradientBoostingClassifier(random_state=3, **settings).fit(x[:n], labels[:n])
    ours = BoostedTrees(stages, settings["learning_rate"], settings["max_depth"], seed=3).fit(x[:n], labels[:n])
    for stage in range(stages):
        for k in range(classes):
            tree, mine = theirs.estimators_[stage, k].tree_, ours.trees_[stage][k]
            np.testing.assert_array_equal(np.maximum(tree.feature, -1), mine.feature)
            inner = tree.feature >= 0
            np.testing.assert_array_equal(tree.threshold[inner], mine.threshold[inner])
            np.testing.assert_array_equal(tree.value[~inner, 0, 0], mine.value[~inner])  # Newton leaf values
    np.testing.assert_array_equal(theirs.predict(x[:n]), ours.train_predictions_)
    np.testing.assert_array_equal(theirs.predict(x[n:]), ours.predict(x[n:]))
    np.testing.assert_allclose(ours.feature_importances_, theirs.feature_importances_, rtol=0, atol=1e-14)


def test_dci_with_genlab_trees_is_dci_with_sklearns() -> None:
    rng = np.random.default_rng(0)
    factors = dm.sample_factors((3, 5, 2), 900, rng)
    codes = np.column_stack([factors[:, 0] + 0.3 * rng.standard_normal(900), factors[:, 1] * 0.2 + factors[:, 2]])
    codes[:, 1] += 0.05 * rng.standard_normal(900)  # continuous, as an encoder's codes (see boosting's docstring)
    codes = np.column_stack([codes, 0.01 * rng.standard_normal((900, 2))])
    ours = dm.dci(codes, factors, num_train=600, seed=1, n_jobs=1)
    theirs = dm.dci(codes, factors, num_train=600, seed=1, n_jobs=1, sklearn_trees=True)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert ours["disentanglement"] > 0.3  # the codes carry their factors apart


def test_two_classes_are_left_to_sklearn() -> None:
    with pytest.raises(ValueError, match="3 classes or more"):
        BoostedTrees().fit(np.zeros((4, 1)), np.array([0, 1, 0, 1]))
