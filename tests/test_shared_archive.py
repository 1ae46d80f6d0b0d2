"""The archive on object storage, against a real S3-compatible server on 127.0.0.1 (moto's standalone server).

Every command that reads or writes the archive takes `--archive s3://bucket/prefix`; writers on many machines
share it: 8 processes writing at once lose nothing (the conditional PUT makes a taken name fail, and the
writer moves to the next `_N` name), and a writer killed mid-upload leaves nothing visible.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.comparison import archive
from harness.comparison.store import FsspecStore, NameTaken, open_store
from harness.errors import HarnessError
from harness.receipts.files import load_receipt
from harness.receipts.verify import verify
from tests.archive_factory import COMMIT, bench_receipt, day, fresh_app, invoke, speeds, write
from tests.pausing_relay import PausingRelay

moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the test extra)")
pytest.importorskip("s3fs", reason="the S3 archive needs s3fs (the archive-s3 extra)")
boto3 = pytest.importorskip("boto3", reason="boto3 comes with moto")

ROOT = Path(__file__).resolve().parent.parent
APP = fresh_app()
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1, for this module's tests."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket; the S3 client of this process and of its children points at the local server."""
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    name = f"bench-{uuid.uuid4().hex[:12]}"
    _client(s3_endpoint).create_bucket(Bucket=name)
    return name


def _client(endpoint: str):  # noqa: ANN202 - a boto3 client, typed by botocore at run time
    return boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def _objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, read straight from the server (not through the harness)."""
    client = _client(endpoint)
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_commands_work_on_an_s3_archive(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    url = f"s3://{bucket}/fleet"
    sources = [
        write(tmp_path / "local", bench_receipt(speeds([speed] * 5), when=day(d)))
        for d, speed in ((1, 100.0), (2, 101.0), (3, 70.0))
    ]
    for src in sources:
        res = invoke(APP, ["archive", "add", src, "--archive", url])
        assert res.code == 0 and f"archived: {url}/" in res.stdout, res.stderr
    again = invoke(APP, ["archive", "add", sources[0], "--archive", url])
    assert again.code == 0 and "already archived" in again.stdout
    stored = _objects(s3_endpoint, bucket)
    assert sorted(stored.values()) == sorted(p.read_bytes() for p in sources)  # the bytes as given

    listed = json.loads(invoke(APP, ["archive", "list", "--archive", url, "--format", "json"]).stdout)
    assert [row["verification"] for row in listed] == ["verified"] * 3
    assert [row["decode tok/s"] for row in listed] == pytest.approx([100, 101, 70])

    regression = invoke(APP, ["compare", "latest~1", "latest", "--archive", url, "--format", "json"])
    assert regression.code == 1 and json.loads(regression.stdout)["verdict"] == "regression"
    assert json.loads(regression.stdout)["base"].startswith(f"{url}/")

    hist = invoke(APP, ["history", "--archive", url, "--format", "json"])
    assert hist.code == 0 and [row["value"] for row in json.loads(hist.stdout)] == pytest.approx(
        [100, 101, 70]
    )

    pruned = invoke(APP, ["archive", "prune", "--keep", "1", "--archive", url])
    assert pruned.code == 0 and "deleted 2 receipts" in pruned.stdout
    assert list(_objects(s3_endpoint, bucket).values()) == [sources[2].read_bytes()]


def test_a_taken_name_is_refused_by_the_server_and_the_receipt_stored_beside_it(
    tmp_path: Path, bucket: str
) -> None:
    store = open_store(f"s3://{bucket}/names")
    assert isinstance(store, FsspecStore)
    store.create("r.json", b"first")
    with pytest.raises(NameTaken):
        store.create("r.json", b"second")  # If-None-Match: * -> HTTP 412 from the server
    assert store.read("r.json") == b"first"
    a = bench_receipt(speeds([100.0] * 3), when=day(4))
    b = bench_receipt(speeds([90.0] * 3), when=day(4))  # same canonical name, other bytes
    first = archive.add(write(tmp_path / "a", a), store)
    second = archive.add(write(tmp_path / "b", b), store)
    assert first[1] and second[1] and second[0] == first[0].replace(".json", "_2.json")


def test_unusable_archive_urls_are_one_line_errors(bucket: str) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        archive.scan(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")
    res = invoke(APP, ["archive", "list", "--archive", "nosuchprotocol://x/y"])
    assert res.code == 2 and "archive nosuchprotocol://x/y" in res.stderr
    assert archive.scan(f"s3://{bucket}/nothing-yet") == []  # an empty prefix is an empty archive


def _writer(start: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.barrier_writer", str(start), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _child_env(endpoint: str) -> dict[str, str]:
    return {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_eight_concurrent_writers_leave_eight_valid_receipts(
    tmp_path: Path, bucket: str, s3_endpoint: str
) -> None:
    """Eight processes archive eight different receipts that all want the same name, released together."""
    url = f"s3://{bucket}/fleet"
    sources = [
        write(tmp_path / f"w{i}", bench_receipt(speeds([100.0 + i] * 3), when=day(7), commit=COMMIT))
        for i in range(8)
    ]
    start = tmp_path / "start"
    procs = [
        _writer(start, "archive", "add", str(p), "--archive", url, env=_child_env(s3_endpoint))
        for p in sources
    ]
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob("start.ready.*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
        time.sleep(0.05)
    start.touch()
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outs]

    stored = _objects(s3_endpoint, bucket)
    base = Path(sources[0]).name.split(".json")[0]  # every source has the same canonical name
    expected_names = {f"fleet/{base}.json"} | {f"fleet/{base}_{n}.json" for n in range(2, 9)}
    assert set(stored) == expected_names
    assert sorted(stored.values()) == sorted(p.read_bytes() for p in sources)  # nothing lost, nothing mixed
    entries = archive.usable(url)
    assert len(entries) == 8 and all(verify(e.receipt).ok for e in entries)


def _padded(receipt: dict) -> None:
    """8 MiB of environment variables (the schema allows 4096 characters each): an upload larger than what
    the kernel buffers of a blocked writer can hold, so a kill really cuts it short."""
    receipt["environment"]["variables"].update({f"BITNET_PAD_{i:04d}": "x" * 4096 for i in range(2048)})


@pytest.mark.slow
def test_a_writer_killed_mid_upload_leaves_nothing(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    """SIGKILL while the PUT body is part sent (a relay holds the upload after 1 MiB): no object appears, not
    even once the relay lets the rest of what the dead writer's kernel sent through, and the same receipt is
    archived afterwards as if nothing had happened."""
    url = f"s3://{bucket}/fleet"
    src = write(tmp_path, bench_receipt(speeds([100.0] * 3), when=day(8), edit=_padded))
    size = src.stat().st_size
    assert size > 8 << 20
    port = int(s3_endpoint.rsplit(":", 1)[1])
    start = tmp_path / "start"
    start.touch()
    with PausingRelay(port, b"PUT ", hold_after=1 << 20) as relay:
        env = _child_env(f"http://127.0.0.1:{relay.port}")
        proc = _writer(start, "archive", "add", str(src), "--archive", url, env=env)
        upload = relay.held_upload()
        assert proc.poll() is None and not upload.closed
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        relay.release()
        deadline = time.monotonic() + 60
        while not upload.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert upload.closed and upload.forwarded < size  # the server got a cut-off request
    assert proc.returncode == -signal.SIGKILL
    assert _objects(s3_endpoint, bucket) == {}
    assert archive.scan(url) == []
    res = invoke(APP, ["archive", "add", src, "--archive", url])
    assert res.code == 0 and "archived:" in res.stdout
    (only,) = _objects(s3_endpoint, bucket).values()
    assert only == src.read_bytes() and verify(load_receipt(src)).ok


@pytest.mark.slow
def test_benchmark_archives_into_s3_and_compares_against_it(
    tmp_path: Path, bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner's whole step: benchmark, add the verified receipt to the shared archive, compare with the
    newest receipt there (resolved before the run)."""
    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(tmp_path / "cache"))
    url = f"s3://{bucket}/fleet"
    args = ["benchmark", "--preset", "tiny", "--threads", "1", "--tokens", "8", "--prompt-tokens", "4"]
    args += ["--repetitions", "4", "--no-probe", "--no-timing", "--no-bandwidth", "--archive", url, "--json"]
    first = invoke(APP, [*args, "--receipts-dir", tmp_path / "a"])
    assert first.code == 0, first.stderr
    archived = json.loads(first.stdout)["archived"]
    assert archived.startswith(f"{url}/")
    second = invoke(APP, [*args, "--receipts-dir", tmp_path / "b", "--compare-to", "latest"])
    assert second.code in (0, 1, 3), second.stderr
    out = json.loads(second.stdout)
    assert out["comparison"]["base"] == archived  # `latest` in the shared archive, before this run
    stored = _objects(s3_endpoint, bucket)
    assert len(stored) == 2 and Path(out["path"]).read_bytes() in stored.values()
