"""Multivariate models of one service's feature vectors: score a window, explain it, learn it.

Every model standardises each feature by its running mean and spread (floored, see
``features.FLOORS``) and learns points clipped to ``CLIP`` spreads from the mean, so one
extreme window teaches little. A window beyond the moments' 99.9 % radius (an outlier under
a Gaussian of the learned mean and covariance) starts a hold: no window is learned until
three in a row are back inside the 90 % radius, or until the hold has lasted the stage's
``accept_after_ns`` (``MultivariateModel.holds``), so a lasting incident stays as unusual
as at its onset instead of being learned within a few windows; while such windows are
common (``COMMON_SURPRISES``: bursts of errors), they start no hold and are learned.
Scores are distances (the SVM's a margin), higher = more unusual; contributions are each
feature's share of the score (they sum to 1). Models run once per service per window, so
a Python object per service is affordable; the number of services is capped by the stage
that owns them.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

CLIP = 5.0
"""Spreads from the running mean beyond which a learned point is clipped..."""
CLIP_AFTER = 10
"""... once this many points have been learned (before, the spread is not known yet)."""
OUTLIER_Z = 3.090
"""Standard normal quantile of the radius that starts a hold (0.999): see ``radius2``."""
USUAL_Z = 1.282
"""... and of the radius a window must be inside to count as usual again (0.9) ..."""
BACK_AFTER = 3
"""... for this many windows in a row to end it: a shift whose noise reaches back inside
now and then is still held (each window of a 4-spread shift falls inside about 1 time in
20), while a usual stretch ends it within a few windows (3 in a row: 0.73 of the time)."""


SURPRISE_MEMORY = 1000
"""Windows the rate of would-be holds remembers (``MultivariateModel.surprises``) ..."""
COMMON_SURPRISES = 0.01
"""... and the rate at which they are the service's usual behaviour, not incidents: ten
times the 0.1 % of windows a Gaussian puts beyond the outer radius."""


def radius2(known: int, z: float) -> float:
    """Squared Mahalanobis radius holding a Gaussian's ``Phi(z)`` in ``known`` dimensions.

    The chi-square quantile by the Wilson-Hilferty cube approximation (within 3 % for
    ``known`` >= 1 at these quantiles).

    Examples
    --------
    >>> [round(radius2(k, OUTLIER_Z), 1) for k in (1, 5)]  # exact: 10.8, 20.5
    [11.1, 20.7]
    >>> [round(radius2(k, USUAL_Z), 1) for k in (1, 5)]  # exact: 2.7, 9.2
    [2.6, 9.2]
    """
    c = 2.0 / (9.0 * known)
    return known * (1.0 - c + z * math.sqrt(c)) ** 3


class RunningMoments:
    """Exponentially weighted mean and covariance of vectors with missing (NaN) entries.

    The first ``1 / alpha`` vectors are averaged equally, later ones with weight ``alpha``.
    A missing entry counts as the current mean. ``floors`` bound each feature's spread
    from below.

    Examples
    --------
    >>> m = RunningMoments(np.array([0.1, 0.1]), alpha=0.5)
    >>> for x in ([1.0, 0.0], [3.0, np.nan]):
    ...     m.learn(np.array(x))
    >>> m.mean.tolist(), m.spread().tolist()
    ([2.0, 0.0], [1.0, 0.1])
    """

    def __init__(self, floors: NDArray[np.float64], alpha: float) -> None:
        self.floors = np.array(floors, np.float64)
        self.alpha = alpha
        d = len(floors)
        self.n = 0
        self.mean = np.zeros(d)
        self.cov = np.zeros((d, d))
        self.seen = np.zeros(d, np.bool_)

    def state_dict(self) -> dict[str, Any]:
        """The learned moments (the floors and ``alpha`` are settings, not state)."""
        return {"n": self.n, "mean": self.mean.copy(), "cov": self.cov.copy(),
                "seen": self.seen.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the moments saved by ``state_dict``."""
        d = len(self.floors)
        mean, cov = np.asarray(state["mean"], np.float64), np.asarray(state["cov"], np.float64)
        seen = np.asarray(state["seen"], np.bool_)
        if mean.shape != (d,) or cov.shape != (d, d) or seen.shape != (d,):
            msg = f"moments of {d} features expected; got mean {mean.shape}, cov {cov.shape}"
            raise ValueError(msg)
        self.n, self.mean, self.cov = int(state["n"]), mean.copy(), cov.copy()
        self.seen = seen.copy()

    def spread(self) -> NDArray[np.float64]:
        """Standard deviation per feature, at least its floor."""
        spread: NDArray[np.float64] = np.sqrt(np.maximum(np.diag(self.cov), self.floors**2))
        return spread

    def floored_cov(self) -> NDArray[np.float64]:
        """The covariance with each variance raised to at least its floor squared."""
        lift = np.maximum(self.floors**2 - np.diag(self.cov), 0.0)
        floored: NDArray[np.float64] = self.cov + np.diag(lift)
        return floored

    def deviation(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """``x - mean``, 0 where ``x`` is missing or the feature is new; and where it is not."""
        known = np.isfinite(x) & self.seen
        return np.where(known, x - self.mean, 0.0), known

    def distance2(self, x: NDArray[np.float64]) -> tuple[float, int]:
        """Squared Mahalanobis distance of ``x`` from the mean, and its known features' count.

        Over the known features only, with the floored covariance (count 0: nothing to
        measure).
        """
        delta, known = self.deviation(x)
        k = int(known.sum())
        if not self.n or not k:
            return 0.0, 0
        d = delta[known]
        return float(d @ np.linalg.solve(self.floored_cov()[np.ix_(known, known)], d)), k

    def standardized(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Deviation from the mean in spreads (0 where missing)."""
        return self.deviation(x)[0] / self.spread()

    def learn(self, x: NDArray[np.float64]) -> None:
        """Update with one vector (clipped to ``CLIP`` spreads after ``CLIP_AFTER``)."""
        first = np.isfinite(x) & ~self.seen
        self.mean[first] = x[first]
        self.seen |= first
        delta, _ = self.deviation(x)
        bound = CLIP * self.spread() if self.n >= CLIP_AFTER else np.inf
        delta = np.clip(delta, -bound, bound)
        self.n += 1
        w = max(self.alpha, 1.0 / self.n)
        self.mean += w * delta
        self.cov = (1.0 - w) * (self.cov + w * np.outer(delta, delta))


class MultivariateModel(abc.ABC):
    """One service's model: ``score_one`` (pure), then ``learn_one``."""

    name: ClassVar[str]
    savable: ClassVar[bool] = True
    """False for models whose state cannot be saved without pickle (river's): they are
    left out of checkpoints and restart cold."""

    def __init__(self, floors: NDArray[np.float64], alpha: float) -> None:
        self.moments = RunningMoments(floors, alpha)
        self.outliers_since_ns = -1
        """Event time the current hold began (-1: none)."""
        self.usual_in_a_row = 0
        """Windows in a row back inside the usual radius, during a hold."""
        self.accepted_ns = -1
        """Event time the model last began learning a run of outliers as normal (-1: never)..."""
        self.accepted_after_ns = 0
        """... and how long that run had lasted then."""
        self.surprises = 0.0
        """Share of recent windows outside a hold that were beyond the outer radius, counted
        once the moments have settled (``1 / alpha`` windows learned): a young model's
        windows are often beyond a radius it has not learned yet (in ``otel-anomaly demo``,
        counted from the start, they ended every hold before the first incident)."""

    def state_dict(self) -> dict[str, Any]:
        """The model's learned state (only for ``savable`` models)."""
        return {"moments": self.moments.state_dict(), "outliers_since_ns": self.outliers_since_ns,
                "usual_in_a_row": self.usual_in_a_row, "accepted_ns": self.accepted_ns,
                "accepted_after_ns": self.accepted_after_ns, "surprises": self.surprises}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict`` (older saves have no outlier run)."""
        self.moments.load_state_dict(state["moments"])
        self.outliers_since_ns = int(state.get("outliers_since_ns", -1))
        self.usual_in_a_row = int(state.get("usual_in_a_row", 0))
        self.accepted_ns = int(state.get("accepted_ns", -1))
        self.accepted_after_ns = int(state.get("accepted_after_ns", 0))
        self.surprises = float(state.get("surprises", 0.0))

    def holds(self, x: NDArray[np.float64], at_ns: int, accept_after_ns: int) -> bool:
        """Whether ``x`` (ending at ``at_ns``) must not be learned: it belongs to a hold.

        A hold starts at a window beyond the 99.9 % radius and ends once ``BACK_AFTER``
        windows in a row are inside the 90 % one (hysteresis: a shift that hovers around
        the outer radius is not learned window by window, nor is the way back then flagged
        as a change of its own). Its windows are not learned until the hold has lasted
        ``accept_after_ns``; then they are (clipped, as any window), so the model takes the
        new level in. Where windows beyond the outer radius come often (``surprises`` above
        ``COMMON_SURPRISES``: error records that come in bursts), they are the service's
        usual behaviour and start no hold: they are learned (clipped) like any window.
        Held, every burst stayed an outlier for good and scored as an incident.

        Examples
        --------
        >>> model = PcaModel(np.full(2, 0.01), alpha=0.1)
        >>> for x in np.random.default_rng(0).normal(0.0, 1.0, (50, 2)):
        ...     model.learn_one(x)
        >>> far, near = np.array([9.0, 9.0]), np.array([2.5, 2.5])
        >>> [model.holds(v, t, accept_after_ns=30) for v, t in ((near, 0), (far, 10), (near, 20))]
        [False, True, True]
        >>> model.holds(far, 40, accept_after_ns=30)  # lasted 30: taken in from now on
        False
        >>> model.accepted_ns, model.accepted_after_ns
        (40, 30)
        >>> [model.holds(np.zeros(2), t, accept_after_ns=90) for t in (50, 60, 70)]
        [True, True, False]
        >>> model.outliers_since_ns  # three usual windows in a row ended it
        -1
        """
        if self.moments.n < CLIP_AFTER:
            return False
        d2, known = self.moments.distance2(x)
        if self.outliers_since_ns < 0:
            outlier = known > 0 and d2 > radius2(known, OUTLIER_Z)
            if self.moments.n * self.moments.alpha >= 1.0:  # not while the moments settle
                self.surprises += (float(outlier) - self.surprises) / SURPRISE_MEMORY
            if not outlier or self.surprises > COMMON_SURPRISES:
                return False
            self.outliers_since_ns, self.usual_in_a_row = at_ns, 0
        elif not known or d2 <= radius2(known, USUAL_Z):
            self.usual_in_a_row += 1
            if self.usual_in_a_row >= BACK_AFTER:  # back among the usual windows
                self.outliers_since_ns = -1
                return False
        else:
            self.usual_in_a_row = 0
        lasted = at_ns - self.outliers_since_ns
        if lasted < accept_after_ns:
            return True
        if self.accepted_ns < self.outliers_since_ns:  # this hold's first window learned
            self.accepted_ns, self.accepted_after_ns = at_ns, lasted
        return False

    def end_hold(self) -> None:
        """Forget the current hold (a deploy's grace: its windows are learned as they come)."""
        self.outliers_since_ns, self.usual_in_a_row = -1, 0

    @property
    def n_learned(self) -> int:
        """Windows learned so far."""
        return self.moments.n

    @property
    def usual(self) -> NDArray[np.float64]:
        """Each feature's running mean (what the explanation calls usual)."""
        return self.moments.mean

    @abc.abstractmethod
    def score_one(self, x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """Raw score (higher = more unusual) and each feature's share of it (sum 1 or 0)."""

    def learn_one(self, x: NDArray[np.float64]) -> None:
        """Learn one vector."""
        self.moments.learn(x)


def _shares(parts: NDArray[np.float64]) -> NDArray[np.float64]:
    total = float(parts.sum())
    return parts / total if total > 0 else np.zeros_like(parts)


class PcaModel(MultivariateModel):
    """Incremental PCA: the point's distance from the mean along every principal axis.

    The running covariance (floored variances) is eigendecomposed per window (``d = 5``:
    a few microseconds). The score is the Mahalanobis distance ``sqrt(T^2)``, Hotelling's
    T² taken over every principal axis, each in units of its own spread: keeping every axis
    catches a jump along a principal direction as well as one across them (a residual-only
    reconstruction error misses the former). Feature ``j`` contributes
    ``(S^(-1/2) (x - mean))_j ** 2`` of T²: the complete decomposition, non-negative and
    summing to T² [^1]. About 2 chi(d) under normal data.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> model = PcaModel(np.full(3, 0.01), alpha=0.02)
    >>> for x in rng.normal(0.0, 1.0, (200, 3)):
    ...     model.learn_one(x)
    >>> score, shares = model.score_one(np.array([0.0, 8.0, 0.0]))
    >>> round(score), int(np.argmax(shares))
    (8, 1)

    References
    ----------
    [^1]: Alcala, C. F. and Qin, S. J. (2009). Reconstruction-based contribution for process
          monitoring. Automatica 45(7).
    """

    name = "pca"

    def score_one(self, x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """Mahalanobis distance and each feature's share of T²."""
        delta, known = self.moments.deviation(x)
        shares = np.zeros(len(x))
        if not self.moments.n or not known.any():
            return 0.0, shares
        sub = self.moments.floored_cov()[np.ix_(known, known)]
        lam, vec = np.linalg.eigh(sub)
        lam = np.maximum(lam, 1e-9 * max(float(lam.max()), 1e-300))
        white = vec @ ((vec.T @ delta[known]) / np.sqrt(lam))
        parts = white**2
        shares[known] = _shares(parts)
        return math.sqrt(float(parts.sum())), shares


class DbstreamModel(MultivariateModel):
    """Distance to the nearest established micro-cluster of river's ``DBSTREAM`` [^1].

    Points are standardised (and clipped) before clustering, so ``clustering_threshold``
    is in spreads. Micro-clusters of weight below ``min_weight`` are ignored when scoring
    unless there is no other: a new regime is unusual until it recurs. Contributions are
    each feature's share of the squared distance to that cluster's center.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> model = DbstreamModel(np.full(3, 0.01), alpha=0.02)
    >>> for x in rng.normal(0.0, 1.0, (200, 3)):
    ...     model.learn_one(x)
    >>> score, shares = model.score_one(np.array([0.0, 8.0, 0.0]))
    >>> score > 4, int(np.argmax(shares))
    (True, 1)

    References
    ----------
    [^1]: Hahsler, M. and Bolanos, M. (2016). Clustering data streams based on shared
          density between micro-clusters. IEEE TKDE 28(6).
    """

    name = "dbstream"
    savable = False

    def __init__(
        self, floors: NDArray[np.float64], alpha: float, *, clustering_threshold: float = 2.0,
        fading_factor: float = 0.01, min_weight: float = 3.0,
    ) -> None:
        super().__init__(floors, alpha)
        self.min_weight = min_weight
        from river import cluster  # noqa: PLC0415 - river loads socket (via scipy): on use

        self.clusterer: Any = cluster.DBSTREAM(
            clustering_threshold=clustering_threshold, fading_factor=fading_factor,
            cleanup_interval=10,
        )

    def score_one(self, x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """Distance to the nearest micro-cluster and each feature's share of it squared."""
        shares = np.zeros(len(x))
        clusters = list(self.clusterer.micro_clusters.values())
        if not self.moments.n or not clusters:
            return 0.0, shares
        strong = [c for c in clusters if c.weight >= self.min_weight] or clusters
        z = self.moments.standardized(x)
        centers = np.array([[c.center.get(j, 0.0) for j in range(len(x))] for c in strong])
        sq = (centers - z) ** 2
        nearest = int(np.argmin(sq.sum(axis=1)))
        return math.sqrt(float(sq[nearest].sum())), _shares(sq[nearest])

    def learn_one(self, x: NDArray[np.float64]) -> None:
        """Cluster the standardised point, then update the moments."""
        if self.moments.n:
            z = np.clip(self.moments.standardized(x), -CLIP, CLIP)
            self.clusterer.learn_one(dict(enumerate(z.tolist())))
        super().learn_one(x)


class OneClassSvmModel(MultivariateModel):
    """River's ``OneClassSVM`` on random Fourier features of the standardised point [^1].

    River's one-class SVM is linear; ``RBFSampler`` (seeded) makes its boundary an RBF
    one. The score is the negated decision function (higher = further outside the normal
    region; it can be negative). River's SGD fit separates slowly: after a few hundred
    windows a jump of 8 spreads scores above most normal windows, not far above all of them
    (``pca`` separates it by an order of magnitude). Contributions are each feature's share
    of the squared standardised deviation from the running mean (the SVM does not
    attribute).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> model = OneClassSvmModel(np.full(3, 0.01), alpha=0.02)
    >>> for x in rng.normal(0.0, 1.0, (600, 3)):
    ...     model.learn_one(x)
    >>> usual = np.median([model.score_one(x)[0] for x in rng.normal(0.0, 1.0, (200, 3))])
    >>> score, shares = model.score_one(np.array([0.0, 8.0, 0.0]))
    >>> bool(score > usual), int(np.argmax(shares))
    (True, 1)

    References
    ----------
    [^1]: Rahimi, A. and Recht, B. (2007). Random features for large-scale kernel machines.
          NeurIPS.
    """

    name = "one_class_svm"
    savable = False

    def __init__(
        self, floors: NDArray[np.float64], alpha: float, *, nu: float = 0.1,
        gamma: float = 0.05, n_components: int = 100, learning_rate: float = 0.1, seed: int = 0,
    ) -> None:
        super().__init__(floors, alpha)
        from river import anomaly, feature_extraction, optim  # noqa: PLC0415 - as DBSTREAM

        self.svm: Any = feature_extraction.RBFSampler(
            gamma=gamma, n_components=n_components, seed=seed
        ) | anomaly.OneClassSVM(nu=nu, optimizer=optim.SGD(learning_rate))

    def score_one(self, x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """Negated decision function and each feature's share of the squared z-scores."""
        if not self.moments.n:
            return 0.0, np.zeros(len(x))
        z = self.moments.standardized(x)
        decision = float(self.svm.score_one(dict(enumerate(z.tolist()))))
        return -decision, _shares(z**2)

    def learn_one(self, x: NDArray[np.float64]) -> None:
        """Fit the boundary on the standardised point, then update the moments."""
        if self.moments.n:
            z = np.clip(self.moments.standardized(x), -CLIP, CLIP)
            self.svm.learn_one(dict(enumerate(z.tolist())))
        super().learn_one(x)


MODELS: dict[str, type[MultivariateModel]] = {
    PcaModel.name: PcaModel,
    DbstreamModel.name: DbstreamModel,
    OneClassSvmModel.name: OneClassSvmModel,
}
"""Model name (``MultivariateSettings.model``) to class."""
