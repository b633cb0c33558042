"""sklearn's GradientBoostingClassifier (log loss, depth-3 squared-error trees, Newton leaves), refit ~9x faster
for DCI's 11,300 trees.

sklearn's splitter sorts a node's samples by every feature at every node; that sort is ~90% of DCI's time.
DCI's boosters all fit the same codes, so here each feature's order is found once and kept through the tree by
stable partitions, and the tree builder is compiled (numba). Everything else follows sklearn 1.9's code step
by step (`ensemble/_gb.py`, `tree/_tree.pyx`, `_splitter.pyx` node_split_best, `_partitioner.pyx`,
`_criterion.pyx` MSE): float32 features; the split positions it considers (a step above 1e-7 in float32);
the proxy Σ_L²/n_L + Σ_R²/n_R with the sums taken as its criterion takes them (left to right, or from the right
after a long tie), over the samples in the order its splitter holds them (its swap partition); its random
feature draws (the same xorshift, seeded from the booster's RandomState), which break exact ties; thresholds
halfway between float32 neighbours; its leaf and stop rules; the Newton leaf values; the importances.

tests/eval/test_boosting.py holds it to sklearn tree by tree (features, thresholds and leaf values bit for
bit; predictions; importances to 1e-14). One difference is left: sklearn's introsort leaves rows with equal
values of a feature in an order of its own, and where such rows have different targets their sum differs in
the last bit, so a split that ties to the last bit can go the other way. In `shapes` 96,256 of the 737,280
images repeat another image of other factor values at 32x32: on a β-VAE's codes DCI's
disentanglement came out 0.4575287 against sklearn's 0.4575245, informativeness equal (docs/disentanglement.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from sklearn._loss.loss import HalfMultinomialLoss
from sklearn.dummy import DummyClassifier

FEATURE_THRESHOLD = np.float32(1e-7)  # sklearn's tree/_partitioner.pxd: closer float32 values do not split
EPSILON = np.finfo(np.float64).eps  # sklearn's tree/_tree.pyx: impurity at or below this is a pure node


class SortedFeatures:
    """float32 features and, per feature, the row order that sorts it: shared by every tree on these rows."""

    def __init__(self, x: np.ndarray) -> None:
        self.x32 = np.ascontiguousarray(x, dtype=np.float32)
        self.order = np.ascontiguousarray(np.argsort(self.x32, axis=0, kind="stable").T)  # (F, N)
        self.values = np.take_along_axis(self.x32.T, self.order, axis=1)


# The GradientBoostingClassifier settings this reproduces; n_estimators, learning_rate and max_depth are arguments.
FIXED_SETTINGS = {"loss": "log_loss", "subsample": 1.0, "min_samples_split": 2, "min_samples_leaf": 1, "max_features": None}
RAND_R_MAX = 2147483647  # sklearn's tree/_utils.pxd
NO_FEATURE = -1


@numba.njit(cache=True)
def _rand_int(low: int, high: int, state: np.ndarray) -> int:
    """sklearn's rand_int over our_rand_r (tree/_utils.pyx, utils/_random.pxd): a xorshift on a uint32 state."""
    mask = np.uint64(0xFFFFFFFF)
    s = np.uint64(state[0])
    if s == np.uint64(0):
        s = np.uint64(1)
    s = s ^ ((s << np.uint64(13)) & mask)
    s = s ^ (s >> np.uint64(17))
    s = s ^ ((s << np.uint64(5)) & mask)
    state[0] = s
    return low + np.int64((s % np.uint64(RAND_R_MAX + 1)) % np.uint64(high - low))


@numba.njit(cache=True)
def _fit_tree(x, order, values, y, seed, max_depth):  # noqa: C901 (one function, as sklearn's builder and splitter read)
    """sklearn's DecisionTreeRegressor(criterion="squared_error", splitter="best", max_depth, min_samples_split=2,
    min_samples_leaf=1) on unit weights, its splitter seeded with `seed`. x: (N, F) float32; order: (F, N) each
    feature's sorting rows; values: (F, N) x in that order. Returns per node: feature (-1 at a leaf), threshold,
    left, right, impurity and samples; the node of each row's leaf; the node count."""
    n, n_features = x.shape
    cap = 2 ** (max_depth + 1)
    feature = np.full(cap, NO_FEATURE, np.int64)
    threshold, impurity_of = np.full(cap, -2.0), np.zeros(cap)
    left_of, right_of, count_of = np.full(cap, -1, np.int64), np.full(cap, -1, np.int64), np.zeros(cap)
    leaf_of = np.zeros(n, np.int64)
    # sorted_rows[f, start:end]: a node's rows in feature f's order (kept by stable partitions: no sort per node);
    # samples[start:end]: the node's rows in the order sklearn's splitter holds them, in which it sums them
    sorted_rows = order.copy()
    sorted_values = values.copy()  # x[sorted_rows[f, p], f], read in order
    reciprocal = 1.0 / np.arange(1, n + 1)  # only to pass over splits that cannot win (see below)
    samples = np.arange(n)
    features, constant_features = np.arange(n_features), np.zeros(n_features, np.int64)
    state = np.array([seed], np.uint64)
    goes_left = np.zeros(n, np.bool_)
    buffer, value_buffer = np.empty(n, np.int64), np.empty(n, np.float32)
    # the builder's stack: start, end, depth, parent, is_left, n_constant_features; impurity apart
    stack = np.zeros((cap, 6), np.int64)
    stack_impurity = np.zeros(cap)
    stack[0, 1], stack[0, 3], stack_impurity[0] = n, -1, np.inf
    top, nodes = 1, 0
    while top > 0:
        top -= 1
        start, end, depth = stack[top, 0], stack[top, 1], stack[top, 2]
        parent, is_left, n_known = stack[top, 3], stack[top, 4], stack[top, 5]
        impurity = stack_impurity[top]
        node, nodes = nodes, nodes + 1
        if parent >= 0:
            if is_left:
                left_of[parent] = node
            else:
                right_of[parent] = node
        m = end - start
        sum_total, sq_sum_total = 0.0, 0.0  # criterion.init
        for p in range(start, end):
            y_i = y[samples[p]]
            sum_total += y_i
            sq_sum_total += y_i * y_i
        if parent < 0:
            impurity = sq_sum_total / m - (sum_total / m) ** 2.0
        impurity_of[node], count_of[node] = impurity, m
        for p in range(start, end):
            leaf_of[samples[p]] = node
        if depth >= max_depth or m < 2 or impurity <= EPSILON:
            continue

        # node_split_best: features drawn without replacement (Fisher-Yates), constants skipped
        best_proxy, best_feature, best_pos, last_sorted = -np.inf, -1, end, -1
        f_i, n_found, n_drawn, n_total, visited = n_features, 0, 0, n_known, 0
        while f_i > n_total and (visited < n_features or visited <= n_found + n_drawn):
            visited += 1
            f_j = _rand_int(n_drawn, f_i - n_found, state)
            if f_j < n_known:
                features[n_drawn], features[f_j] = features[f_j], features[n_drawn]
                n_drawn += 1
                continue
            f_j += n_found
            f = features[f_j]
            last_sorted = f
            column = sorted_values[f]
            if column[end - 1] <= column[start] + FEATURE_THRESHOLD:
                features[f_j], features[n_total] = features[n_total], features[f_j]
                n_found += 1
                n_total += 1
                continue
            f_i -= 1
            features[f_i], features[f_j] = features[f_j], features[f_i]
            # criterion.reset, then update(p) at each position where the value steps by more than the threshold,
            # adding from the left, or subtracting from the right where that is fewer samples
            sum_left, pos, p = 0.0, start, start
            while p < end:
                p += 1
                while p < end and column[p] <= column[p - 1] + FEATURE_THRESHOLD:
                    p += 1
                if p >= end:
                    break
                if p - pos <= end - p:
                    for q in range(pos, p):
                        sum_left += y[sorted_rows[f, q]]
                else:
                    sum_left = sum_total
                    for q in range(end - 1, p - 1, -1):
                        sum_left -= y[sorted_rows[f, q]]
                pos = p
                sum_right = sum_total - sum_left
                # within 1e-15 of the exact proxy: a split more than 1e-12 below the best cannot win, and the
                # exact value (sklearn's two divisions) is only worked out for the rest
                rough = sum_left * sum_left * reciprocal[p - start - 1] + sum_right * sum_right * reciprocal[end - p - 1]
                if rough < best_proxy * (1.0 - 1e-12):
                    continue
                n_left = float(p - start)
                proxy = sum_left * sum_left / n_left + sum_right * sum_right / (m - n_left)
                if proxy > best_proxy:
                    best_proxy, best_feature, best_pos = proxy, f, p
        features[:n_known] = constant_features[:n_known]
        constant_features[n_known:n_total] = features[n_known:n_total]
        n_known = n_total
        if best_pos >= end:
            continue
        f = best_feature
        cut = float(sorted_values[f, best_pos - 1]) / 2.0 + float(sorted_values[f, best_pos]) / 2.0

        # partition_samples_final on the samples as the last sort left them: a front scan that swaps each
        # right-going sample with the last unplaced one
        for p in range(start, end):
            samples[p] = sorted_rows[last_sorted, p]
        lo, hi = start, end
        while lo < hi:
            if x[samples[lo], f] <= cut:
                lo += 1
            else:
                hi -= 1
                samples[lo], samples[hi] = samples[hi], samples[lo]
        pos = best_pos
        # criterion.reset(); update(pos); children_impurity(); impurity_improvement()
        if pos - start <= end - pos:
            sum_left = 0.0
            for q in range(start, pos):
                sum_left += y[samples[q]]
        else:
            sum_left = sum_total
            for q in range(end - 1, pos - 1, -1):
                sum_left -= y[samples[q]]
        sq_sum_left = 0.0
        for q in range(start, pos):
            sq_sum_left += y[samples[q]] * y[samples[q]]
        n_left, n_right = float(pos - start), float(end - pos)
        sum_right, sq_sum_right = sum_total - sum_left, sq_sum_total - sq_sum_left
        impurity_left = sq_sum_left / n_left - (sum_left / n_left) ** 2.0
        impurity_right = sq_sum_right / n_right - (sum_right / n_right) ** 2.0
        improvement = (m / n) * (impurity - n_right / m * impurity_right - n_left / m * impurity_left)
        if improvement + EPSILON < 0.0:
            continue
        feature[node], threshold[node] = f, cut

        # each feature's sorted rows, stably into the two children (what spares the sort at every node)
        if depth + 1 < max_depth:
            for q in range(start, end):
                goes_left[samples[q]] = q < pos
            for g in range(n_features):
                a, b = start, 0
                for q in range(start, end):
                    r, v = sorted_rows[g, q], sorted_values[g, q]
                    to_left = goes_left[r]
                    sorted_rows[g, a], sorted_values[g, a] = r, v
                    buffer[b], value_buffer[b] = r, v
                    a += to_left
                    b += 1 - to_left
                sorted_rows[g, a:end] = buffer[:b]
                sorted_values[g, a:end] = value_buffer[:b]
        for child in ((pos, end, 0), (start, pos, 1)):  # the right child pushed first: the left one is taken first
            stack[top, 0], stack[top, 1], stack[top, 2] = child[0], child[1], depth + 1
            stack[top, 3], stack[top, 4], stack[top, 5] = node, child[2], n_known
            stack_impurity[top] = impurity_left if child[2] else impurity_right
            top += 1
    return feature, threshold, left_of, right_of, impurity_of, count_of, leaf_of, nodes


@dataclass
class Tree:
    """A fitted regression tree: internal nodes send x[feature] <= threshold left; leaves hold a value."""

    feature: np.ndarray  # -1 at a leaf
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    importance: np.ndarray  # (F,) impurity decrease per feature over the root's samples (sklearn's, unnormalised)

    def apply(self, x32: np.ndarray) -> np.ndarray:
        """(N, F) float32 -> (N,) the leaf each row falls in."""
        return _apply(self.feature, self.threshold, self.left, self.right, x32)


@numba.njit(cache=True)
def _apply(feature, threshold, left, right, x32):
    out = np.zeros(len(x32), np.int64)
    for i in range(len(x32)):
        node = 0
        while feature[node] >= 0:
            node = left[node] if x32[i, feature[node]] <= threshold[node] else right[node]
        out[i] = node
    return out


@numba.njit(cache=True)
def _group_by_leaf(leaf_of, nodes):
    """Rows grouped by leaf, ascending within each (a counting sort): rows[starts[l]:starts[l + 1]] are leaf l's."""
    starts = np.zeros(nodes + 1, np.int64)
    for leaf in leaf_of:
        starts[leaf + 1] += 1
    starts = np.cumsum(starts)
    rows, filled = np.empty(len(leaf_of), np.int64), starts[:-1].copy()
    for i in range(len(leaf_of)):
        rows[filled[leaf_of[i]]] = i
        filled[leaf_of[i]] += 1
    return rows, starts


def fit_tree(data: SortedFeatures, y: np.ndarray, seed: int, max_depth: int = 3) -> tuple[Tree, np.ndarray]:
    """A regression tree on y as sklearn's DecisionTreeRegressor fits it (see _fit_tree); leaf values are the
    leaves' means until the booster replaces them. Returns the tree and each row's leaf."""
    feature, threshold, left, right, impurity, count, leaf_of, nodes = _fit_tree(
        data.x32, data.order, data.values, np.ascontiguousarray(y, dtype=np.float64), np.uint64(seed), max_depth
    )
    feature, left, right = feature[:nodes], left[:nodes], right[:nodes]
    impurity, count = impurity[:nodes], count[:nodes]
    importance = np.zeros(data.x32.shape[1])
    for node in np.flatnonzero(feature >= 0):  # compute_feature_importances, node by node in sklearn's order
        a, b = left[node], right[node]
        importance[feature[node]] += count[node] * impurity[node] - count[a] * impurity[a] - count[b] * impurity[b]
    value = np.zeros(nodes)
    return Tree(feature, threshold[:nodes], left, right, value, importance / count[0]), leaf_of


class BoostedTrees:
    """GradientBoostingClassifier(loss="log_loss", n_estimators, learning_rate, max_depth, subsample=1.0,
    max_features=None) for three classes or more, as sklearn fits it."""

    def __init__(self, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 3, seed: int = 0) -> None:
        self.n_estimators, self.learning_rate, self.max_depth, self.seed = n_estimators, learning_rate, max_depth, seed

    def fit(self, x: np.ndarray | SortedFeatures, labels: np.ndarray) -> BoostedTrees:
        data = x if isinstance(x, SortedFeatures) else SortedFeatures(x)
        self.classes_, encoded = np.unique(labels, return_inverse=True)
        k_classes, n = len(self.classes_), len(encoded)
        if k_classes < 3:
            raise ValueError(f"BoostedTrees needs 3 classes or more, got {k_classes}: use sklearn's for two")
        y = encoded.astype(np.float64)
        loss = HalfMultinomialLoss(n_classes=k_classes)
        eps = np.finfo(np.float64).eps
        prior = DummyClassifier(strategy="prior").fit(np.zeros((n, 1)), y).predict_proba(np.zeros((1, 1)))
        self.init_ = loss.link.link(np.clip(prior, eps, 1 - eps, dtype=np.float64))
        raw = np.repeat(self.init_, n, axis=0)
        random_state = np.random.RandomState(self.seed)
        targets = [np.array(y == k, dtype=np.float64) for k in range(k_classes)]  # the Newton step's y per class
        self.trees_: list[list[Tree]] = []
        for _ in range(self.n_estimators):
            neg_gradient = -loss.gradient(y_true=y, raw_prediction=raw, sample_weight=None)
            stage = []
            for k in range(k_classes):
                # each of sklearn's trees seeds its splitter with one draw from the booster's RandomState
                tree, leaf_of = fit_tree(data, neg_gradient[:, k], random_state.randint(0, RAND_R_MAX), self.max_depth)
                # _update_terminal_regions: one Newton step per leaf. With unit weights sklearn's np.average is
                # the leaf's (pairwise) sum over its rows in ascending order, divided by their count.
                target = targets[k]
                rows, starts = _group_by_leaf(leaf_of, len(tree.feature))
                for leaf in np.flatnonzero(tree.feature < 0):
                    indices = rows[starts[leaf] : starts[leaf + 1]]
                    neg_g = neg_gradient[indices, k]
                    prob = target[indices] - neg_g
                    numerator = neg_g.sum() / len(indices) * ((k_classes - 1) / k_classes)
                    denominator = (prob * (1 - prob)).sum() / len(indices)
                    tree.value[leaf] = 0.0 if abs(denominator) < 1e-150 else float(numerator) / float(denominator)
                raw[:, k] += self.learning_rate * tree.value.take(leaf_of, axis=0)
                stage.append(tree)
            self.trees_.append(stage)
        self.n_features_in_ = data.x32.shape[1]
        self.train_predictions_ = self.classes_[np.argmax(raw, axis=1)]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        raw = np.repeat(self.init_, len(x32), axis=0)
        for stage in self.trees_:
            for k, tree in enumerate(stage):
                raw[:, k] += self.learning_rate * tree.value[tree.apply(x32)]
        return self.classes_[np.argmax(raw, axis=1)]

    @property
    def feature_importances_(self) -> np.ndarray:
        """The mean over trees with a split of each tree's importance, normalised to sum 1 (sklearn's)."""
        relevant = [tree.importance for stage in self.trees_ for tree in stage if len(tree.feature) > 1]
        if not relevant:
            return np.zeros(self.n_features_in_)
        mean = np.mean(relevant, axis=0, dtype=np.float64)
        return mean / np.sum(mean)
