"""CPU and memory pressure: /proc parsing and the sustained-over-a-window rule."""

from __future__ import annotations

import pytest

from waagent_guard.doctor.pressure import (
    CpuTimes,
    PressureWindow,
    cpu_percent,
    parse_meminfo,
    parse_proc_stat,
)


def test_proc_stat_busy_share_counts_iowait_as_idle() -> None:
    first = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 1 1 1\n")
    second = parse_proc_stat("cpu  150 0 150 800 100 0 0 0 0 0\n")
    assert first == CpuTimes(busy=200, total=1000)
    assert second is not None
    assert cpu_percent(first, second) == pytest.approx(50.0)


@pytest.mark.parametrize("text", ["", "intr 1 2\n", "cpu  a b c d\n", "cpu  1 2\n"])
def test_unusable_proc_stat_gives_none(text: str) -> None:
    assert parse_proc_stat(text) is None


def test_no_elapsed_time_gives_no_percentage() -> None:
    same = CpuTimes(10, 100)
    assert cpu_percent(same, same) is None


def test_meminfo_uses_memavailable() -> None:
    info = parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 250 kB\n")
    assert info is not None
    assert info.used_percent == pytest.approx(75.0)
    assert parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n") is None


def test_zero_total_memory_is_zero_percent() -> None:
    info = parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n")
    assert info is not None and info.used_percent == 0.0


def test_window_is_unknown_until_covered() -> None:
    window = PressureWindow(60, 90)
    window.add(1000, 95)
    window.add(1030, 95)
    assert window.sustained(1030) is None
    window.add(1060, 95)
    assert window.sustained(1060) is True
    assert window.latest() == 95


def test_one_dip_below_the_threshold_breaks_sustained() -> None:
    window = PressureWindow(60, 90)
    for moment, value in ((0, 95), (20, 80), (40, 95), (60, 95)):
        window.add(moment, value)
    assert window.sustained(60) is False
    window.add(80, 95)  # window [20, 80]: the dip at 20 s still counts
    assert window.sustained(80) is False
    window.add(100, 95)  # window [40, 100]: the dip is gone
    assert window.sustained(100) is True


def test_unmeasurable_sample_breaks_sustained_and_old_samples_are_dropped() -> None:
    window = PressureWindow(60, 90)
    window.add(0, 95)
    window.add(30, None)
    window.add(60, 95)
    assert window.sustained(60) is False
    assert window.latest() == 95
    for moment in range(90, 400, 30):
        window.add(moment, 95)
    assert len(window) <= 4
    assert window.sustained(390) is True


def test_clock_going_backwards_restarts_the_window() -> None:
    window = PressureWindow(60, 90)
    window.add(100, 95)
    window.add(50, 95)
    assert len(window) == 1
    assert PressureWindow(10, 90).latest() is None


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PressureWindow(0, 90)
