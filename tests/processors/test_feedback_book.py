"""The feedback book: a false positive raises its series' bar; silences mute; lessons fade."""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.alerting.feedback import (
    FALSE_POSITIVE_MARGIN,
    LESSON_HALF_LIFE_S,
    FeedbackBook,
    UnknownAnomalyError,
)
from otel_anomaly.processors.types import AnomalyEvent, SeriesKey

KEY = SeriesKey("cpu", (("service.name", "api"),), ())
DAY = 86400 * 10**9


def event(kind: str, score: float, *, slot: int = 3, direction: str = "up") -> AnomalyEvent:
    return AnomalyEvent(kind, slot, KEY, 0, direction, score, 90.0, 50.0, 40.0, 60.0,  # type: ignore[arg-type]
                        "default", "cpu up", anomaly_id="a1")


def quieted(book: FeedbackBook, scores: list[float], *, above: bool = True, ts: int = 0,
            labels: tuple[tuple[str, str], ...] = ()) -> list[float]:
    n = len(scores)
    out = book.quieted(np.full(n, 3, np.intp), np.full(n, ts, np.int64),
                       np.array(scores), np.full(n, above), lambda slot: labels)
    return [float(x) for x in out]


def test_a_false_positive_mutes_excursions_of_its_size_and_side_but_not_larger_ones() -> None:
    book = FeedbackBook()
    book.saw([event("open", 2.0), event("update", 4.0), event("close", 0.5)])
    judged = book.judge("a1", "false_positive", 0, author="sre@example.com")
    assert judged.peak_score == 4.0 and judged.bar == FALSE_POSITIVE_MARGIN * 4.0
    assert quieted(book, [3.0, 6.0, 6.5, 20.0]) == [0.0, 0.0, 6.5, 20.0]
    assert quieted(book, [3.0], above=False) == [3.0]  # the other side is not taught
    assert book.verdict_of("a1") == ("false_positive", "sre@example.com")


def test_the_lesson_fades_with_event_time() -> None:
    book = FeedbackBook()
    book.saw([event("open", 4.0)])
    book.judge("a1", "false_positive", 0)
    week = int(LESSON_HALF_LIFE_S * 1e9)
    assert quieted(book, [5.0], ts=week) == [5.0]  # the bar is 3.0 after a half-life
    assert quieted(book, [2.9], ts=week) == [0.0]


def test_a_true_positive_teaches_nothing_and_unknown_ids_are_refused() -> None:
    book = FeedbackBook()
    book.saw([event("open", 4.0)])
    assert book.judge("a1", "true_positive", 0).bar == 0.0
    assert quieted(book, [1.5]) == [1.5]
    with pytest.raises(UnknownAnomalyError, match="no anomaly 'nope' is remembered"):
        book.judge("nope", "false_positive", 0)


def test_a_silence_mutes_the_series_it_selects_during_its_window_only() -> None:
    book = FeedbackBook()
    book.silence({"job": "api"}, start_unix_nano=DAY, end_unix_nano=2 * DAY)
    api, web = (("job", "api"), ("metric", "cpu")), (("job", "web"), ("metric", "cpu"))
    assert quieted(book, [9.0], ts=DAY, labels=api) == [0.0]
    assert quieted(book, [9.0], ts=DAY, labels=web) == [9.0]
    assert quieted(book, [9.0], ts=3 * DAY, labels=api) == [9.0]


def test_state_round_trips_and_reset_forgets_the_slot() -> None:
    book = FeedbackBook()
    book.saw([event("open", 4.0)])
    book.judge("a1", "false_positive", 0)
    book.silence({"job": "api"}, 0, DAY)
    copy = FeedbackBook()
    copy.load_state_dict(book.state_dict())
    assert quieted(copy, [5.0, 7.0]) == [0.0, 7.0]
    assert copy.verdict_of("a1")[0] == "false_positive" and len(copy.silences) == 1
    copy.reset(np.array([3]))
    assert quieted(copy, [5.0], ts=2 * DAY) == [5.0]


def test_an_evicted_series_anomalies_go_with_it_so_no_verdict_lands_on_its_slot() -> None:
    # The slot of an evicted series is given to the next new one: a late verdict on the
    # old series' anomaly used to raise the new series' bar and mute its first incident.
    book = FeedbackBook()
    book.saw([event("open", 4.0)])
    book.reset(np.array([3]))
    with pytest.raises(UnknownAnomalyError):
        book.judge("a1", "false_positive", 0)
    assert quieted(book, [5.0]) == [5.0]


def test_a_corrected_verdict_takes_its_lesson_back_and_a_repeat_counts_once() -> None:
    book = FeedbackBook()
    book.saw([event("open", 4.0)])
    assert book.judge("a1", "false_positive", 0).changed
    assert not book.judge("a1", "false_positive", 0).changed
    assert quieted(book, [5.0]) == [0.0]
    judged = book.judge("a1", "true_positive", 0)
    assert judged.changed and judged.bar == 0.0
    assert quieted(book, [5.0]) == [5.0]
    assert book.verdicts == {"false_positive": 1, "true_positive": 1}
