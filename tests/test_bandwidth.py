"""The read-bandwidth floor: buffer size from the cache, median of passes, before/after agreement, and the
probe kept out of the run's memory."""

import pytest

from harness.errors import HarnessError
from harness.machine import bandwidth
from harness.machine.bandwidth import Floor, Probe, probe_bytes, probe_in_child
from harness.machine.host import peak_rss_bytes

GIB = 1 << 30


@pytest.mark.parametrize(
    ("llc", "expected"),
    [(0, GIB), (32 << 20, GIB), (256 << 20, GIB), (384 << 20, 4 * (384 << 20)), (1 << 30, 4 * GIB)],
)
def test_buffer_is_at_least_1_gib_and_4_times_the_cache(llc: int, expected: int) -> None:
    assert probe_bytes(llc) == expected


def test_buffer_is_whole_chunks() -> None:
    assert probe_bytes(GIB + 3) % (8 * 4096) == 0 and probe_bytes(GIB + 3) > GIB


def test_floor_is_the_median_of_every_pass() -> None:
    before = Probe((30.0, 31.0, 29.0), GIB, 2)
    after = Probe((28.0, 32.0, 30.5), GIB, 2)
    floor = Floor((before, after))
    assert floor.read_gbps == pytest.approx(30.25)  # median of the six passes, not the best probe
    assert floor.spread == pytest.approx((32.0 - 28.0) / 30.25)
    assert floor.disagreement == pytest.approx(0.5 / 30.5)
    assert floor.noisy_reason is None
    fields = floor.measurement()
    assert fields["noisy"] is False and [p["median_gbps"] for p in fields["probes"]] == [30.0, 30.5]


def test_probes_that_disagree_mark_the_run_noisy_instead_of_taking_the_larger() -> None:
    floor = Floor((Probe((35.9,) * 3, GIB, 2), Probe((54.5,) * 3, GIB, 2)))
    assert floor.read_gbps == pytest.approx((35.9 + 54.5) / 2)
    assert floor.disagreement == pytest.approx((54.5 - 35.9) / 54.5)
    assert "disagree by 34%" in (floor.noisy_reason or "")
    assert floor.measurement()["noisy"] is True


def test_one_probe_has_no_disagreement() -> None:
    floor = Floor((Probe((10.0, 12.0), GIB, 1),))
    assert floor.disagreement is None and floor.noisy_reason is None and floor.read_gbps == 11.0


def test_in_process_probe_reports_every_pass() -> None:
    probe = bandwidth.measure_read_bandwidth(nbytes=8 << 20, passes=3, threads=1)
    assert len(probe.samples_gbps) == 3 and all(s > 0 for s in probe.samples_gbps)
    assert probe.buffer_bytes == 8 << 20 and probe.threads == 1
    with pytest.raises(HarnessError, match="at least 1 pass"):
        bandwidth.measure_read_bandwidth(nbytes=8 << 20, passes=0)


def test_child_probe_never_enters_this_process_peak_rss() -> None:
    peak = peak_rss_bytes()
    probe = probe_in_child(threads=1, passes=2, nbytes=768 << 20)
    assert len(probe.samples_gbps) == 2 and probe.buffer_bytes == 768 << 20 and probe.threads == 1
    assert peak_rss_bytes() - peak < 64 << 20  # the child read 768 MiB; none of it is ours


def test_child_probe_failure_is_one_line() -> None:
    with pytest.raises(HarnessError, match=r"^the read bandwidth probe failed \(exit 1\): \w+Error: .+$"):
        probe_in_child(threads=0, passes=1, nbytes=1 << 20)  # numba refuses 0 threads in the child
