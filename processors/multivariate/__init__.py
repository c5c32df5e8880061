"""Multivariate models of per-service feature vectors (RED and log features together)."""

from otel_anomaly.processors.multivariate.features import (
    FEATURE_NAMES,
    FEATURES,
    Feature,
    ServiceVector,
    ServiceVectors,
)
from otel_anomaly.processors.multivariate.models import (
    MODELS,
    DbstreamModel,
    MultivariateModel,
    OneClassSvmModel,
    PcaModel,
    RunningMoments,
)
from otel_anomaly.processors.multivariate.settings import (
    MULTIVARIATE_METRIC,
    MULTIVARIATE_RULE,
    ModelName,
    MultivariateSettings,
)
from otel_anomaly.processors.multivariate.stage import Attribution, FeatureShare, MultivariateStage

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "MODELS",
    "MULTIVARIATE_METRIC",
    "MULTIVARIATE_RULE",
    "Attribution",
    "DbstreamModel",
    "Feature",
    "FeatureShare",
    "ModelName",
    "MultivariateModel",
    "MultivariateSettings",
    "MultivariateStage",
    "OneClassSvmModel",
    "PcaModel",
    "RunningMoments",
    "ServiceVector",
    "ServiceVectors",
]
