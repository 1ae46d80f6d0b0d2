"""bench-kernels: the timing helpers and the command on small shapes (the real shapes are a benchmark)."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from engine.kernels import bench
from harness.commands import bench_kernels
from harness.machine.kernel_speeds import decode_estimate


@pytest.fixture(scope="module")
def evict() -> np.ndarray:
    return bench.eviction_buffer(1 << 20)


def test_time_matrix_reports_what_it_ran(evict: np.ndarray) -> None:
    for kernel in ("i2s", "tq2_0", "tl1", "tl2"):
        t = bench.time_matrix(kernel, 64, 256, 3, evict)
        want = "i2s_blk_gemv" if kernel == "tq2_0" else f"{kernel}_gemv"
        assert t.kernel_id == want and (t.rows, t.cols) == (64, 256)
        assert len(t.samples) == 3 and all(s > 0 for s in t.samples)
        assert t.cold_seconds == float(np.median(t.samples))
        d = t.as_dict()
        assert d["cold_gmac_per_s"] == pytest.approx(64 * 256 / t.cold_seconds / 1e9)
        assert d["cold_gb_per_s"] == pytest.approx(t.nbytes / t.cold_seconds / 1e9)
    assert bench.time_matrix("i2s", 64, 256, 1, evict, variant="portable").variant == "portable"


def test_time_logits_counts_the_row_sums_it_reads(evict: np.ndarray) -> None:
    auto = bench.time_logits(10, 128, 2, evict)
    port = bench.time_logits(10, 128, 2, evict, variant="portable")
    assert port.variant == "portable" and port.nbytes == 10 * 128 + 4 * 10
    assert auto.nbytes == port.nbytes + (4 * 10 if auto.variant == "avx512vnni" else 0)


def _row(name: str, shape: tuple[int, int], seconds: float, nbytes: int, variant: str = "v") -> dict:
    return {"name": name, "variant": variant, "shape": list(shape), "cold_seconds": seconds, "bytes": nbytes}


def test_decode_estimate_sums_a_2b4t_step() -> None:
    rows = [
        _row("i2s", (2560, 2560), 1e-4, 100),
        _row("i2s", (640, 2560), 2e-5, 10),
        _row("i2s", (6912, 2560), 3e-4, 300),
        _row("i2s", (2560, 6912), 3e-4, 300),
        _row("logits", (128256, 2560), 0.01, 5000, "a"),
        _row("logits", (128256, 2560), 0.02, 4000, "b"),
    ]
    est = decode_estimate(rows, bandwidth=10.0)["v"]
    layer = 2 * 1e-4 + 2 * 2e-5 + 2 * 3e-4 + 3e-4  # q, o; k, v; gate, up; down
    assert est["seconds"] == pytest.approx(30 * layer + 0.01)
    assert est["bytes"] == 30 * (200 + 20 + 600 + 300) + 5000 and est["logits_variant"] == "a"
    assert est["floor_tokens_per_s"] == pytest.approx(10e9 / est["bytes"])
    assert decode_estimate(rows[:3], bandwidth=10.0) is None


def _app() -> typer.Typer:
    app = typer.Typer()
    bench_kernels.register(app)
    app.callback()(lambda: None)
    return app


def test_command_json_on_small_shapes() -> None:
    args = ["bench-kernels", "--shape", "64x256", "--logits-shape", "12x128", "--repeats", "2"]
    result = CliRunner().invoke(_app(), [*args, "--evict-mb", "1", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bandwidth_gb_per_s"] > 0 and data["threads"] == 1
    names = [(r["name"], r["kernel_id"], tuple(r["shape"])) for r in data["results"]]
    assert names == [
        ("i2s", "i2s_gemv", (64, 256)),
        ("tq2_0", "i2s_blk_gemv", (64, 256)),
        ("tl1", "tl1_gemv", (64, 256)),
        ("tl2", "tl2_gemv", (64, 256)),
        ("logits", "logits_i8", (12, 128)),
    ]
    for r in data["results"]:
        assert r["cold_fraction_of_floor"] == pytest.approx(r["cold_gb_per_s"] / data["bandwidth_gb_per_s"])
    assert data["decode_estimate"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--shape", "64by256"], "ROWSxCOLS"), (["--kernels", "i2s,foo"], "comma list")],
)
def test_bad_options_are_harness_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_app(), ["bench-kernels", *args])
    assert result.exit_code != 0
    assert message in str(result.exception)
