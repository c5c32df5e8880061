"""The engine's multivariate stage: closed windows in, one score point per service out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.multivariate.features import FEATURES, FLOORS, ServiceVectors
from otel_anomaly.processors.multivariate.models import MODELS, MultivariateModel
from otel_anomaly.processors.multivariate.settings import MULTIVARIATE_METRIC, MultivariateSettings
from otel_anomaly.processors.state.codec import as_labels
from otel_anomaly.processors.types import Labels, Observations, SeriesKey

TOP_FEATURES = 2


@dataclass(frozen=True, slots=True)
class FeatureShare:
    """One feature's part in a multivariate score, for people: shares are in [0, 1]."""

    label: str
    share: float
    value: str
    usual: str


@dataclass(frozen=True, slots=True)
class Attribution:
    """Why a service's window scored as it did: the model and its top features."""

    model: str
    top: tuple[FeatureShare, ...]
    baseline_after_s: float = 0.0
    """> 0: the model recently took a run of unusual windows in as normal, after this long
    (a close then says the new mix is the baseline, not that the features came back)."""


class MultivariateStage:
    """Per-service models over ``ServiceVectors``; their scores become derived points.

    Each finished vector is scored by its service's model (once warm), the score is added
    to the request's observations as ``service_multivariate:score{model=...}`` (calibrated
    and alerted on like any series), then the vector is learned, unless it belongs to a
    hold younger than ``accept_after_ns`` (``MultivariateModel.holds``); its score point
    then teaches the score's own rule nothing either (``Observations.unlearned``). The
    engine passes the score rule's ``AlertPolicy.lasting_s``, so a lasting incident keeps
    its score as long as the score's own anomaly is held, instead of being learned within a
    few windows.

    Examples
    --------
    >>> from otel_anomaly.processors.signals.traces import CALLS_METRIC
    >>> stage = MultivariateStage(MultivariateSettings(warmup=2), window_ns=10)
    >>> svc = (("service.name", "api"),)
    >>> for t, calls in enumerate([5.0, 6.0, 5.0, 50.0, 5.0], start=1):
    ...     out = Observations()
    ...     out.add(SeriesKey(CALLS_METRIC, svc, ()), t * 10, calls)
    ...     why = stage.observe(out, now=0.0)
    ...     rows = zip(out.keys, out.ts, out.values, strict=True)
    ...     print([(k.metric, ts, round(v, 1)) for k, ts, v in rows][1:])
    []
    []
    []
    [('service_multivariate:score', 30, 1.0)]
    [('service_multivariate:score', 40, 28.7)]
    >>> print(next(iter(why.values())).top[0])
    FeatureShare(label='call rate', share=1.0, value='50', usual='5.4')
    """

    def __init__(self, settings: MultivariateSettings, window_ns: int,
                 accept_after_ns: int = 0) -> None:
        self.settings = settings
        self.accept_after_ns = accept_after_ns
        self.vectors = ServiceVectors(window_ns, settings.max_services)
        self.models: dict[Labels, MultivariateModel] = {}
        self._model = MODELS[settings.model]
        self._attributes: Labels = (("model", settings.model),)

    @property
    def models_savable(self) -> bool:
        """Whether checkpoints keep the models (river's restart cold after a restore)."""
        return self._model.savable

    def state_dict(self) -> dict[str, Any]:
        """The windows being assembled, and each service's model where it can be saved."""
        models = ([(service, model.state_dict()) for service, model in self.models.items()]
                  if self.models_savable else [])
        return {"vectors": self.vectors.state_dict(), "models": models}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict`` (unsaved models start afresh)."""
        self.vectors.load_state_dict(state["vectors"])
        self.models = {}
        for service, saved in state["models"]:
            model = self.models[as_labels(service)] = self._model(FLOORS, self.settings.alpha)
            model.load_state_dict(saved)

    @property
    def skipped_points(self) -> int:
        """Derived points of services beyond ``max_services``, not modelled."""
        return self.vectors.skipped_points

    def observe(
        self, out: Observations, now: float,
        in_grace: Callable[[Labels, int], bool] | None = None,
    ) -> dict[tuple[SeriesKey, int], Attribution]:
        """Append the score points of the windows ``out`` finished; return why each scored.

        ``in_grace(service, end_unix_nano)``: whether the window falls in its service's
        grace period after a deploy. Such windows are learned whatever their distance, and
        end any hold: a deploy's new level is the new normal, as for every other series.
        """
        why: dict[tuple[SeriesKey, int], Attribution] = {}
        sizes = out.count_array()
        for vector in self.vectors.add(list(out.keys), list(out.ts), list(out.values), now,
                                       None if sizes is None else sizes.tolist()):
            model = self.models.get(vector.service)
            if model is None:
                model = self.models[vector.service] = self._model(FLOORS, self.settings.alpha)
            row = -1
            if model.n_learned >= self.settings.warmup:
                score, shares = model.score_one(vector.x)
                key = SeriesKey(MULTIVARIATE_METRIC, vector.service, self._attributes)
                row = len(out)
                out.add(key, vector.end_unix_nano, score)
                why[(key, vector.end_unix_nano)] = self._attribution(
                    model, vector.x, shares, self._baseline_after_s(model, vector.end_unix_nano))
            if in_grace is not None and in_grace(vector.service, vector.end_unix_nano):
                model.end_hold()
                model.learn_one(vector.x)
            elif not model.holds(vector.x, vector.end_unix_nano, self.accept_after_ns):
                model.learn_one(vector.x)
            elif row >= 0:
                # Nor does the score's own rule learn it: its band would take the incident
                # in within a window or two, while the model still calls it unusual.
                out.unlearned.add(row)
        return why

    def _baseline_after_s(self, model: MultivariateModel, at_ns: int) -> float:
        """How long the run was that ``model`` took in, if within its memory before ``at_ns``.

        The memory is ``1 / alpha`` windows: a score that fell because the model learned the
        new level closes within it; later closes are ordinary ones.
        """
        memory_ns = self.vectors.window_ns / self.settings.alpha
        if model.accepted_ns < 0 or at_ns - model.accepted_ns > memory_ns:
            return 0.0
        return model.accepted_after_ns / 1e9

    def _attribution(
        self, model: MultivariateModel, x: NDArray[np.float64], shares: NDArray[np.float64],
        baseline_after_s: float = 0.0,
    ) -> Attribution:
        order = np.argsort(-shares, kind="stable")[:TOP_FEATURES]
        usual = model.usual
        top = tuple(
            FeatureShare(FEATURES[j].label, float(shares[j]), FEATURES[j].show(float(x[j])),
                         FEATURES[j].show(float(usual[j])))
            for j in order.tolist() if shares[j] > 0
        )
        return Attribution(self.settings.model, top, baseline_after_s)

    def expire(self, now: float, ttl_s: float) -> None:
        """Free the models of services without a point for ``ttl_s``."""
        for service in self.vectors.expire(now, ttl_s):
            self.models.pop(service, None)
