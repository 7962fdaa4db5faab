from __future__ import annotations

import pytest

from waagent_guard.timeutil import format_duration, iso_utc, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5h", 5400),
     ("250ms", 0.25), ("1w", 604800)],
)
def test_durations_are_parsed(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5m", "0"])
def test_bad_durations_name_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [("100", 100), ("30M", 30 * 1024**2), ("30MiB", 30 * 1024**2),
                       ("1G", 1024**3), ("512k", 512 * 1024)],
)
def test_sizes_are_parsed(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "0", "12Q"])
def test_bad_sizes_name_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_durations_are_formatted_for_people() -> None:
    assert format_duration(3725) == "1h2m5s"
    assert format_duration(0) == "0s"
    assert format_duration(86400) == "1d"
    assert format_duration(-61) == "-1m1s"


def test_epoch_is_rendered_as_utc_iso() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert iso_utc(1.5) == "1970-01-01T00:00:01.500000Z"
    assert iso_utc(None) is None
