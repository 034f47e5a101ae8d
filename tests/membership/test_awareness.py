import pytest

from shoal.membership.awareness import Awareness


def test_awareness_clamps_to_range() -> None:
    awareness = Awareness(8)
    awareness.apply_delta(-3)
    assert awareness.score == 0
    awareness.apply_delta(100)
    assert awareness.score == 7


def test_awareness_scales_durations_by_score_plus_one() -> None:
    awareness = Awareness(8)
    awareness.apply_delta(2)
    assert awareness.scale(0.5) == pytest.approx(1.5)


def test_awareness_disabled_stays_healthy() -> None:
    awareness = Awareness(8, enabled=False)
    awareness.apply_delta(5)
    assert awareness.score == 0
    assert awareness.scale(1.0) == 1.0
