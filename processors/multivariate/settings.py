"""Settings of the per-service multivariate stage, and the rule that calibrates its score."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Literal

from otel_anomaly.processors.settings import AlertPolicy, DetectorRule

ModelName = Literal["pca", "dbstream", "one_class_svm", "disabled"]

MULTIVARIATE_METRIC = "service_multivariate:score"
"""Metric name of each service's multivariate score series (label ``model`` says which)."""

MULTIVARIATE_RULE = DetectorRule(
    name="multivariate",
    match=(MULTIVARIATE_METRIC,),
    detector="ewma_zscore",
    params=MappingProxyType({"alpha": 0.02, "warmup": 30}),
    alert=AlertPolicy(direction="up", band=4.0, min_duration=2, close_after=2),
)
"""How a service's raw multivariate score becomes a band, a flag and events: its usual
level and spread (EWMA), only higher-than-usual counts, two windows out of the band open
an anomaly (one far out opens it at once). Used unless a configured rule names the metric."""


@dataclass(frozen=True, slots=True)
class MultivariateSettings:
    """Per-service feature vectors and the model that scores them.

    Parameters
    ----------
    model
        ``pca`` (incremental PCA, the default: cheap and explains itself), ``dbstream``
        (river's DBSTREAM micro-clusters), ``one_class_svm`` (river's one-class SVM on
        random Fourier features) or ``disabled``.
    max_services
        Services modelled at most; vectors of further services are counted as skipped.
    warmup
        Windows a service's model learns before its score is emitted.
    alpha
        Weight of the newest window in the running mean and covariance, in (0, 1].
    rule
        Calibrates the score series; a configured rule that names ``MULTIVARIATE_METRIC``
        (any glob but ``*``) takes precedence.
    """

    model: ModelName = "pca"
    max_services: int = 500
    warmup: int = 30
    alpha: float = 0.02
    rule: DetectorRule = field(default=MULTIVARIATE_RULE)

    @property
    def enabled(self) -> bool:
        """Whether any model runs."""
        return self.model != "disabled"

    def rules(self, configured: tuple[DetectorRule, ...]) -> tuple[DetectorRule, ...]:
        """The engine's rules: ``rule`` first, unless disabled or a configured rule names it.

        Examples
        --------
        >>> [r.name for r in MultivariateSettings().rules((DetectorRule(),))]
        ['multivariate', 'default']
        >>> mine = DetectorRule(name="mine", match=("service_*",))
        >>> [r.name for r in MultivariateSettings().rules((mine, DetectorRule()))]
        ['mine', 'default']
        """
        if not self.enabled:
            return configured
        for rule in configured:
            if any(p != "*" and fnmatchcase(MULTIVARIATE_METRIC, p) for p in rule.match):
                return configured
        return (self.rule, *configured)
