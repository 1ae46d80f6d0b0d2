"""Per-machine history: the host fingerprint, `archive machines`, `history --machine`, and compare's machine
check."""

import json
from pathlib import Path

import pytest

from harness.comparison.compare import comparability
from harness.machine.fingerprint import differences, machine_of
from harness.receipts.digest import finalize
from tests.archive_factory import bench_receipt, day, fresh_app, invoke, speeds, write

APP = fresh_app()


def _receipt(d: int = 1, **host: object) -> dict:
    return bench_receipt(speeds([100.0 + d] * 3), when=day(d), edit=lambda r: r["host"].update(host))


def test_the_fingerprint_follows_what_decides_kernel_speed() -> None:
    base = machine_of(_receipt())
    assert len(base.id) == 12 and base.cores == 2 and base.memory_gib == 8
    assert "avx512_vnni" in base.isa_flags and base.label == "Test CPU, 2 cores, 8 GiB"
    # not a new machine: a kernel that shows a few MiB less memory, or other (non instruction-set) flags
    same = _receipt(memory_bytes=(8 << 30) - (40 << 20))
    same["host"]["cpu_flags"] = [*same["host"]["cpu_flags"], "md_clear", "hypervisor"]
    assert machine_of(same).id == base.id
    # a new machine: other cores, memory, instruction sets or CPU model
    for change, fact in (
        ({"cores": 4}, "cores"),
        ({"memory_bytes": 16 << 30}, "memory_gib"),
        ({"cpu_flags": ["avx2", "fma"]}, "isa_flags"),
        ({"cpu_model": "Other CPU"}, "cpu_model"),
    ):
        other = machine_of(_receipt(**change))
        assert other.id != base.id and differences(base, other) == [fact]


def test_a_receipt_without_host_facts_still_has_a_machine() -> None:
    r = _receipt()
    r["host"] = {}
    m = machine_of(r)
    assert (
        m.cpu_model is None and m.isa_flags == () and m.label == "unknown CPU, cores unknown, memory unknown"
    )


def test_archive_machines_and_history_by_machine(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    for d in (1, 2, 3):
        write(folder, _receipt(d))
    for d in (4, 5):
        write(folder, _receipt(d, cores=4))
    rows = json.loads(invoke(APP, ["archive", "machines", "--archive", folder, "--format", "json"]).stdout)
    assert sorted(r["receipts"] for r in rows) == [2, 3] and {r["cores"] for r in rows} == {2, 4}
    two_cores = next(r["machine"] for r in rows if r["cores"] == 2)

    mixed = invoke(APP, ["history", "--archive", folder, "--format", "json"])
    assert len(json.loads(mixed.stdout)) == 5 and "2 machines" in mixed.stderr
    one = invoke(APP, ["history", "--archive", folder, "--machine", two_cores[:6], "--format", "json"])
    values = [row["value"] for row in json.loads(one.stdout)]
    assert values == pytest.approx([101.0, 102.0, 103.0]) and "machines" not in one.stderr
    none = invoke(APP, ["history", "--archive", folder, "--machine", "ffffffffffff"])
    assert none.code == 2 and "no receipt" in none.stderr


def test_compare_refuses_two_machines_and_names_what_differs() -> None:
    base, new = _receipt(1), _receipt(2, cores=4, memory_bytes=16 << 30)
    new["host"]["cpu_flags"] = ["avx2", "fma"]
    new["kernel_choice"]["variants"] = dict.fromkeys(new["kernel_choice"]["variants"], "portable")
    new = finalize(new)  # a genuine receipt of a host without AVX-512: its kernels ran portable
    (reason,) = comparability(base, new)
    assert reason.key == "machine"
    assert "cores: BASE 2, NEW 4" in reason.message and "memory_gib: BASE 8, NEW 16" in reason.message
    assert "only BASE avx512_vnni avx512bw avx512f avx512vl" in reason.message
    assert comparability(base, new, ignore=["machine"]) == []
