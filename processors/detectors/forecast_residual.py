"""Forecast residual: an online autoregressive model per series and its prediction interval.

The weights are fitted by recursive least squares; the interval comes from the residuals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.detectors.base import Prediction, SlotStateDetector
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch

_MAD_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
_TINY = 1e-12
_HUBER_SIGMAS = 3.0
_P_INIT = 100.0  # initial inverse-covariance scale: a weak prior on the weights
_P_MAX = 1e4  # covariance wind-up guard on series that stop moving (no excitation)
_LEVEL_ALPHA = 0.01  # how fast the normalising level and scale follow the series


class ForecastResidual(SlotStateDetector):
    """One-step-ahead AR(``order``) forecast per series; the score is the residual in sigmas.

    Each series is normalised by a slow exponentially weighted level and mean absolute
    deviation, and the next normalised value is forecast from the last ``order`` ones plus
    an intercept; the weights are fitted online by recursive least squares with forgetting
    factor ``forgetting`` (about ``1 / (1 - forgetting)`` points of memory). The prediction
    interval is ``forecast +- band * sigma``, ``sigma`` the exponentially weighted mean
    absolute residual (as a normal sigma). Residuals enter both the weights and the spread
    Huber-capped at 3 sigmas, so an incident does not teach the model much. It follows
    trends, slow oscillations and autocorrelated noise that a level model calls anomalous,
    and flags breaks of the series' short-term dynamics.

    Score: ``|x - forecast| / sigma``, both directions. 0 (band NaN) for the first
    ``warmup`` points. Cost per row: about twenty array operations on ``order + 1``-sized
    vectors and matrices; state per series ``(order + 1) * (order + 2) + order + 5``
    floats (about 60 for order 4).

    Parameters
    ----------
    order
        Past values the forecast uses, >= 1.
    forgetting
        Recursive least squares forgetting factor, in (0, 1].
    alpha
        Weight of the newest residual in the spread, in (0, 1].
    warmup
        Points a series must have before it is scored, > ``order``.

    Examples
    --------
    >>> det = ForecastResidual(warmup=20)
    >>> trend = [10.0 + 0.5 * i + (-1) ** i * 0.1 for i in range(60)]  # a steady climb
    >>> det.learn(SeriesBatch.of([0] * 60, trend))
    >>> det.score(SeriesBatch.of([0, 0], [40.1, 50.0])).round(1)
    array([  0.3, 150.3])

    References
    ----------
    [^1]: Haykin, S. (2002). Adaptive Filter Theory (4th ed.), ch. 9: the recursive
        least-squares algorithm. Prentice Hall.
    [^2]: Hyndman, R. J., & Athanasopoulos, G. (2021). Forecasting: Principles and Practice
        (3rd ed.), ch. 5.5: prediction intervals. OTexts.
    """

    name: ClassVar[str] = "forecast_residual"

    def __init__(
        self, *, order: int = 4, forgetting: float = 0.999, alpha: float = 0.02,
        warmup: int = 50,
    ) -> None:
        if order < 1:
            msg = f"forecast_residual: order must be >= 1; got {order}"
            raise ValueError(msg)
        if not 0.0 < forgetting <= 1.0 or not 0.0 < alpha <= 1.0:
            msg = (f"forecast_residual: forgetting and alpha must be in (0, 1]; got "
                   f"{forgetting}, {alpha}")
            raise ValueError(msg)
        if warmup <= order:
            msg = f"forecast_residual: `warmup` must be > `order`; got {warmup} <= {order}"
            raise ValueError(msg)
        self.order = order
        self.forgetting = forgetting
        self.alpha = alpha
        self.warmup = warmup
        d = order + 1
        self._slots = SlotArrays(
            n=Column(np.int64),
            level=Column(np.float64, 0.0),
            scale=Column(np.float64, 0.0),
            dev=Column(np.float64, 0.0),
            lags=Column(np.float64, 0.0, (order,)),  # newest first, in original units
            w=Column(np.float64, 0.0, (d,)),
            p=Column(np.float64, _P_INIT * np.eye(d), (d, d)),
        )

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def _features(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Intercept and normalised lags per row."""
        level = self._slots.level[slots, None]
        scale = self._slots.scale[slots, None] + _TINY * (1.0 + np.abs(level))
        lags = (self._slots.lags[slots] - level) / scale
        return np.concatenate([np.ones((len(slots), 1)), lags], axis=1)

    def _forecast(self, slots: NDArray[np.intp]) -> tuple[NDArray[Any], ...]:
        """Forecast, sigma (original units) and the features they came from."""
        self._ensure(slots)
        phi = self._features(slots)
        level = self._slots.level[slots]
        scale = self._slots.scale[slots] + _TINY * (1.0 + np.abs(level))
        with np.errstate(over="ignore", invalid="ignore"):
            forecast = level + scale * np.einsum("ij,ij->i", self._slots.w[slots], phi)
        sigma = np.maximum(self._slots.dev[slots] * _MAD_TO_SIGMA,
                           _TINY * (1.0 + np.abs(forecast)))
        return forecast, sigma, phi

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """The forecast and ``forecast +- band * sigma`` (NaN band while warming). Pure."""
        forecast, sigma, _ = self._forecast(batch.slots)
        n = self._slots.n[batch.slots]
        ready = n >= self.warmup
        level = self._slots.level[batch.slots]
        expected = np.where(n > self.order, forecast, np.where(n > 0, level, np.nan))
        with np.errstate(over="ignore", invalid="ignore"):
            lower = np.where(ready, forecast - band * sigma, np.nan)
            upper = np.where(ready, forecast + band * sigma, np.nan)
        return Prediction(expected, lower, upper)

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Return ``|x - forecast| / sigma`` per row (0 while warming, NaN if not finite)."""
        forecast, sigma, _ = self._forecast(batch.slots)
        with np.errstate(invalid="ignore", over="ignore"):
            z = np.abs(batch.values - forecast) / sigma
        z = np.where(self._slots.n[batch.slots] >= self.warmup, z, 0.0)
        return np.where(np.isfinite(batch.values), z, np.nan)

    def _learn_unique(self, batch: SeriesBatch) -> None:
        slots, x = batch.slots, batch.values
        forecast, sigma, phi = self._forecast(slots)
        n = self._slots.n[slots] + 1
        fitted = n > self.order + 1  # the lags are all real values
        resid = x - forecast
        cap = np.where(n > self.warmup, _HUBER_SIGMAS * sigma, np.inf)
        capped = np.clip(resid, -cap, cap)
        # Spread: plain averaging at first, then alpha; only once the lags are real.
        dev = self._slots.dev[slots]
        weight = np.maximum(self.alpha, 1.0 / np.maximum(n - self.order - 1, 1))
        self._slots.dev[slots] = np.where(fitted, dev + weight * (np.abs(capped) - dev), dev)
        # Recursive least squares on the normalised target (capped residual).
        scale = self._slots.scale[slots] + _TINY * (1.0 + np.abs(self._slots.level[slots]))
        err = np.where(fitted, capped / scale, 0.0)
        p = self._slots.p[slots]
        p_phi = np.einsum("ijk,ik->ij", p, phi)
        gain = p_phi / (self.forgetting + np.einsum("ij,ij->i", phi, p_phi))[:, None]
        self._slots.w[slots] += np.where(fitted[:, None], gain * err[:, None], 0.0)
        new_p = (p - gain[:, :, None] * p_phi[:, None, :]) / self.forgetting
        # Wind-up guard: without excitation P grows as 1 / forgetting**t; freeze it then.
        trace = np.einsum("ijj->i", new_p)
        keep = fitted & np.isfinite(trace) & (trace < _P_MAX)
        self._slots.p[slots] = np.where(keep[:, None, None], new_p, p)
        # Normalising level and scale (plain averages at first), then the lag window.
        level = self._slots.level[slots]
        lw = np.maximum(_LEVEL_ALPHA, 1.0 / n)
        self._slots.level[slots] = level + lw * (x - level)
        self._slots.scale[slots] = np.where(n > 1, self._slots.scale[slots]
                                      + lw * (np.abs(x - level) - self._slots.scale[slots]), 0.0)
        lags = self._slots.lags[slots]
        lags = np.where((n == 1)[:, None], x[:, None], lags)  # pad with the first value
        self._slots.lags[slots] = np.concatenate([x[:, None], lags[:, :-1]], axis=1)
        self._slots.n[slots] = n

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True where fewer than ``warmup`` points were learned."""
        self._ensure(slots)
        return self._slots.n[slots] < self.warmup

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"warmup": 10}
        yield {"order": 1, "forgetting": 1.0, "alpha": 0.2, "warmup": 3}
