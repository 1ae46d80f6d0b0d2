"""Strict loading: BITNET_STRICT_MODE and --strict-loader make near misses errors; permissive by default."""

import pytest
from typer.testing import CliRunner

from engine.errors import TensorSizeError
from engine.loader import load_file
from harness.cli import app

UP = "blk.0.ffn_up.weight"  # i2s (512, 256): 32800 bytes expected, near-miss tolerance 32


@pytest.fixture
def near_miss(make_model):
    return make_model(sizes={UP: 32800 + 32})


@pytest.mark.parametrize(
    ("value", "strict"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("0", False),
        ("false", False),
        ("junk", False),
    ],
)
def test_environment_decides_when_no_flag(monkeypatch, near_miss, value, strict):
    monkeypatch.setenv("BITNET_STRICT_MODE", value)
    if strict:
        with pytest.raises(TensorSizeError, match="strict mode"):
            load_file(near_miss)
    else:
        assert any(UP in w for w in load_file(near_miss).warnings)


def test_unset_environment_is_permissive(monkeypatch, near_miss):
    monkeypatch.delenv("BITNET_STRICT_MODE", raising=False)
    mf = load_file(near_miss)
    assert [c.status for c in mf.checks if c.name == UP] == ["near"]


def test_explicit_argument_wins_over_the_environment(monkeypatch, near_miss):
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    assert load_file(near_miss, strict=False).warnings
    monkeypatch.setenv("BITNET_STRICT_MODE", "0")
    with pytest.raises(TensorSizeError):
        load_file(near_miss, strict=True)


def test_exact_files_load_in_strict_mode(make_model):
    for fmt in ("i2s", "qk256", "bitnet32", "tq2_0", "tq1_0"):
        assert load_file(make_model(fmt, name=f"{fmt}.gguf"), strict=True).warnings == []


def test_cli_flag_sets_strict_mode(monkeypatch, near_miss):
    monkeypatch.delenv("BITNET_STRICT_MODE", raising=False)
    runner = CliRunner()
    permissive = runner.invoke(app, ["model", "inspect", str(near_miss), "--json"])
    assert permissive.exit_code == 0, permissive.output
    assert '"strict": false' in permissive.output
    strict = runner.invoke(app, ["model", "inspect", str(near_miss), "--json", "--strict-loader"])
    assert strict.exit_code == 1
    assert '"strict": true' in strict.output and "strict mode" in strict.output


def test_cli_without_flag_follows_the_environment(monkeypatch, near_miss):
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    result = CliRunner().invoke(app, ["model", "inspect", str(near_miss), "--json"])
    assert result.exit_code == 1 and '"strict": true' in result.output
