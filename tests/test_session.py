"""The benchmark session without the command line: every refusal before any work, one run end to end, the
schema checked once per receipt and the model hashed once per run."""

import hashlib
import sys
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import EngineError
from harness.errors import HarnessError
from harness.progress import TaskBoard
from harness.receipts import digest, schema
from harness.receipts.checks import Evidence
from harness.receipts.files import load_receipt
from harness.receipts.signing import check_signature, generate_keypair
from harness.receipts.verify import verify
from harness.session.benchmark import run_benchmark_session
from harness.session.request import BenchmarkRequest

KEY = Path("a key written by the test")


class Recorder:
    """A Progress that remembers every status, note and task the session reported."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def status(self, message: str) -> AbstractContextManager[object]:
        self.events.append(f"status: {message}")
        return nullcontext()

    def note(self, message: str) -> None:
        self.events.append(f"note: {message}")

    @contextmanager
    def tasks(self):  # type: ignore[no-untyped-def]
        events = self.events

        class Board:
            def add_task(self, description: str, total: float | None = None) -> int:
                events.append(f"task: {description}")
                return 0

            def update(self, task_id: int, **_: Any) -> None:
                return None

        board: TaskBoard = Board()
        yield board


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(cache))
    return cache


def _tiny(tmp_path: Path, **changes: Any) -> BenchmarkRequest:
    base = {
        "preset": "tiny",
        "threads": 1,
        "tokens": 4,
        "prompt_tokens": 4,
        "repetitions": 2,
        "probe_phase": False,
        "timing_phase": False,
        "bandwidth": False,
        "receipts_dir": tmp_path / "receipts",
    }
    return BenchmarkRequest(**{**base, **changes})


REFUSED = [
    ({"sign_key": Path("/nonexistent/signing.key")}, "cannot read"),
    ({"sign_key": KEY, "ab_kernel": "i2s,tl2"}, "--sign-key signs a single run's receipt"),
    ({"compare_to": "latest", "ab_threads": "1,2"}, "separate modes"),
    ({"vs_llama_cpp": True, "temperature": 0.7}, "greedy"),
    ({"vs_llama_cpp": True, "ab_kernel": "i2s,tl1"}, "separate modes"),
    ({"ab_kernel": "i2s,tl2", "ab_threads": "1,2"}, "not both"),
    ({"ab_kernel": "i2s,i2s"}, "two different configurations"),
    ({"ab_threads": "1,x"}, "two integers"),
    ({"compare_to": "nothing-like-this"}, "matches no benchmark receipt"),
    ({"ab_kernel": "i2s,tl2", "threshold": 1.5}, "--threshold"),
    ({"repetitions": 0}, "--repetitions"),
    ({"warmup": -1}, "--warmup"),
    ({"prompt_tokens": 0}, "--prompt-tokens"),
    ({"kernel": "gpu"}, "unknown kernel"),
    ({"top_p": 0.0}, "top-p"),
    ({"model": Path("/nonexistent/model.gguf")}, "does not exist"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED)
def test_every_refusal_comes_before_any_work(
    tmp_path: Path, _cache: Path, changes: dict[str, Any], message: str
) -> None:
    (tmp_path / "receipts").mkdir()
    recorder = Recorder()
    if changes.get("sign_key") is KEY:
        changes = {**changes, "sign_key": generate_keypair(tmp_path / "key")[0]}
    with pytest.raises((HarnessError, EngineError), match=message):
        run_benchmark_session(_tiny(tmp_path, **changes), recorder)
    assert recorder.events == []  # no model prepared, no bandwidth measured, nothing loaded
    assert not _cache.exists()  # the preset model was not written
    assert list((tmp_path / "receipts").iterdir()) == []


def test_a_missing_llama_cpp_is_refused_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the parity extra were not installed
    with pytest.raises(HarnessError, match="--vs-llama-cpp: llama_cpp is not importable"):
        _tiny(tmp_path, vs_llama_cpp=True).validate()


def test_defaults_resolve_in_the_plan(tmp_path: Path) -> None:
    plan = _tiny(tmp_path).validate()
    assert plan.arch == "bitnet-b1.58" and plan.pair is None and plan.base is None
    assert plan.params.temperature == 0.0
    ab = _tiny(tmp_path, ab_threads="1,2").validate()
    assert ab.pair is not None and [s.threads for s in ab.pair] == [1, 2]


def test_a_signed_run_checks_the_schema_once_and_hashes_the_model_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validations: list[int] = []
    real_validator = schema.validator

    def counting_validator():  # type: ignore[no-untyped-def]
        validations.append(1)
        return real_validator()

    hashers: list[Any] = []

    def counting_sha256(*args: Any) -> Any:
        h = _CountingHash(hashlib.sha256(*args))
        hashers.append(h)
        return h

    monkeypatch.setattr(schema, "validator", counting_validator)
    monkeypatch.setattr(digest, "hashlib", SimpleNamespace(sha256=counting_sha256))
    recorder = Recorder()
    private, public = generate_keypair(tmp_path / "key")
    outcome = run_benchmark_session(_tiny(tmp_path, sign_key=private), recorder)

    assert outcome.exit_code == 0 and not outcome.ab and outcome.comparison is None
    (written,) = outcome.receipts
    assert written.verification.ok and "model_binding" in written.verification.passed
    assert written.signature is not None and written.signature.is_file()
    assert load_receipt(written.path) == written.receipt
    assert len(validations) == 1  # verify() checked the schema; write_receipt did not check it again
    size = Path(written.receipt["model"]["path"]).stat().st_size
    assert sum(h.nbytes == size for h in hashers) == 1  # the model file went through sha256 once
    assert any(e.startswith("status: loading") for e in recorder.events)
    assert "task: phase 3: benchmark" in recorder.events
    body = written.path.read_bytes()
    attestation = check_signature(written.path, body, written.receipt, public)
    assert attestation.ok, attestation.problem
    assert verify(load_receipt(written.path), Evidence(attestation=attestation)).level == "attested"


def test_an_ab_session_writes_two_verified_receipts_and_compares_them(tmp_path: Path) -> None:
    outcome = run_benchmark_session(_tiny(tmp_path, ab_kernel="i2s,tl1", repetitions=2, warmup=1))
    assert outcome.ab and [w.side.name for w in outcome.receipts if w.side] == ["A", "B"]
    assert all(w.verification.ok for w in outcome.receipts)  # each trace counts only its own repetitions
    assert outcome.comparison is not None and outcome.exit_code == outcome.comparison.exit_code
    kernels = [w.receipt["kernel_choice"]["requested"] for w in outcome.receipts]
    assert kernels == ["i2s", "tl1"]


class _CountingHash:
    """A sha256 object that remembers how many bytes it was fed."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.nbytes = inner, 0

    def update(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.inner.update(data)

    def hexdigest(self) -> str:
        return self.inner.hexdigest()
