"""Each lie told with a genuine receipt, and the level and gate of the verifier that catches it.

A forgery is an edit of the session's one genuine receipt, made arithmetically consistent again and
re-checksummed as a careful forger would (tests/forgery/forger.py), planted under the genuine file name
beside the genuine signature envelope. Each test names the gate that must catch it, the level (the flags)
and the exit code; the lies no evidence can catch assert the verdict's wording and that
`--require-signature` rejects them.
"""

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from engine.presets import PRESETS
from harness.cli import app
from harness.receipts.digest import finalize, token_digest
from harness.receipts.signing import envelope_path, load_private_key, sign_receipt_file
from tests.forgery.conftest import Genuine, Ledger, Verdict, run_verifier
from tests.forgery.forger import forge

Receipt = dict[str, Any]


def plant(folder: Path, genuine: Genuine, receipt: Receipt) -> Path:
    """The forgery under the genuine receipt's name, with the genuine signature envelope beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / genuine.path.name
    path.write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(genuine.envelope, envelope_path(path))
    return path


def caught(ledger: Ledger, lie: str, path: Path, gate: str, *flags: str | Path, code: int = 1) -> Verdict:
    """Verify, record, and require `gate` to fail with exit `code`."""
    verdict = run_verifier(path, *flags)
    ledger.record(lie, tuple(map(str, flags)), gate, verdict)
    assert verdict.code == code, verdict.data
    assert verdict.status(gate) == "fail", verdict.data
    return verdict


def unattested(ledger: Ledger, lie: str, path: Path, genuine: Genuine, *flags: str | Path) -> None:
    """A lie no evidence catches: the verdict says the speed is self-reported, and a required signature
    (the genuine envelope no longer matches the bytes) rejects it."""
    verdict = run_verifier(path, *flags)
    ledger.record(lie, tuple(map(str, flags)), "none", verdict)
    assert verdict.code == 0, verdict.data
    assert "unsigned: speed is self-reported" in verdict.text
    caught(ledger, lie, path, "signature", "--public-key", genuine.public_key, "--require-signature")


def _decode_scaled(factor: float, prefill: bool = False):
    def edit(r: Receipt) -> None:
        for rep in r["phases"]["benchmark"]["repetitions"]:
            rep["decode_seconds"] = [s * factor for s in rep["decode_seconds"]]
            if prefill:
                rep["prefill_seconds"] *= factor
                rep["ttft_seconds"] *= factor

    return edit


def _noise_judged(genuine: Genuine) -> bool:
    """The receipt says its machine was quiet: an inconsistency then fails instead of warning."""
    noise = genuine.receipt.get("noise")
    return isinstance(noise, dict) and noise.get("noisy") is False


def speed_lie(ledger: Ledger, lie: str, path: Path, genuine: Genuine) -> None:
    """A speed invented consistently. The timing phase contradicts it unless that phase was slow itself (a
    warning without a quiet-machine record); --remeasure fails it unless this host now runs faster than
    the invented speed (the genuine run may have been measured on a busier machine); a required signature
    always rejects it. Each outcome is recorded as measured."""
    verdict = run_verifier(path)
    ledger.record(lie, (), "timing_consistency", verdict)
    timing = verdict.status("timing_consistency")
    if timing == "fail":
        assert verdict.code == 1 and _noise_judged(genuine)
    else:
        assert verdict.code == 0 and "unsigned: speed is self-reported" in verdict.text
        assert timing in ("pass", "not_checked") or "noisy: speed unreliable" in verdict.text
    flags = ("--replay", "--remeasure")
    verdict = run_verifier(path, *flags)
    ledger.record(lie, flags, "remeasure", verdict)
    assert verdict.status("remeasure") in ("pass", "fail") or verdict.busy_remeasure()
    assert verdict.status("replay") == "pass"
    caught(ledger, lie, path, "signature", "--public-key", genuine.public_key, "--require-signature")


# --- speed ---


def test_halved_samples(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "every decode, prefill and TTFT sample halved, summaries recomputed, checksum redone"
    path = plant(tmp_path, genuine, forge(genuine.receipt, _decode_scaled(0.5, prefill=True)))
    speed_lie(ledger, lie, path, genuine)
    if run_verifier(path).status("timing_consistency") == "warn":  # then no speed-up is reported
        assert CliRunner().invoke(app, ["compare", str(genuine.path), str(path)]).exit_code == 3


def test_benchmark_phase_4x_faster_than_its_timing_phase(
    genuine: Genuine, ledger: Ledger, tmp_path: Path
) -> None:
    lie = "the benchmark phase 4x faster while the timing phase of the same receipt says otherwise"
    speed_lie(ledger, lie, plant(tmp_path, genuine, forge(genuine.receipt, _decode_scaled(0.25))), genuine)


def test_samples_pasted_from_a_faster_run(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "decode samples pasted from another, 3x faster run"
    speed_lie(ledger, lie, plant(tmp_path, genuine, forge(genuine.receipt, _decode_scaled(0.3))), genuine)


def test_every_phase_that_could_contradict_deleted_with_a_10x_claim(
    genuine: Genuine, ledger: Ledger, tmp_path: Path
) -> None:
    lie = "bandwidth, timing, probe, variants and flags deleted together with a 10x speed claim"

    def edit(r: Receipt) -> None:
        for key in ("probe", "timing"):
            del r["phases"][key]
        del r["bandwidth"], r["kernel_choice"]["variants"]
        r["host"]["cpu_flags"] = []
        _decode_scaled(0.1, prefill=True)(r)

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    assert "not checked: kernel_variants, bandwidth_floor, timing_consistency" in run_verifier(path).text
    speed_lie(ledger, lie, path, genuine)


def test_only_the_fastest_repetition_kept(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "only the fastest repetition kept (counters recomputed)"

    def edit(r: Receipt) -> None:
        reps = r["phases"]["benchmark"]["repetitions"]
        r["phases"]["benchmark"]["repetitions"] = [min(reps, key=lambda x: sum(x["decode_seconds"]))]

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit, recount_kernels=True))
    unattested(ledger, lie, path, genuine)


def test_decode_steps_of_1e_300_seconds(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "decode steps of 1e-300 s (1e300 tok/s)"
    path = plant(tmp_path, genuine, forge(genuine.receipt, _decode_scaled(1e-300 / 1e-3)))
    caught(ledger, lie, path, "latencies")


def test_zero_latencies_and_ttft_below_prefill(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "zero latencies, TTFT below prefill"

    def edit(r: Receipt) -> None:
        for rep in r["phases"]["benchmark"]["repetitions"]:
            rep["ttft_seconds"], rep["prefill_seconds"] = 0.0, rep["prefill_seconds"]
            rep["decode_seconds"] = [0.0] + rep["decode_seconds"][1:]

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "latencies")


def test_slowest_decode_steps_dropped(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "the slowest decode steps dropped (15 -> 12 samples for 16 tokens)"

    def edit(r: Receipt) -> None:
        for rep in r["phases"]["benchmark"]["repetitions"]:
            rep["decode_seconds"] = sorted(rep["decode_seconds"])[:12]

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit, recount_kernels=True))
    caught(ledger, lie, path, "tokens")


def test_duplicated_repetition_rows(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "the fastest repetition's row copied over the others"

    def edit(r: Receipt) -> None:
        reps = r["phases"]["benchmark"]["repetitions"]
        best = min(reps, key=lambda x: sum(x["decode_seconds"]))
        r["phases"]["benchmark"]["repetitions"] = [copy.deepcopy(best) for _ in reps]

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "duplicate_samples")


def test_timestamp_equal_to_started_at(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "timestamp equal to started_at after the load, JIT and measured time"
    path = plant(tmp_path, genuine, forge(genuine.receipt, lambda r: r.update(timestamp=r["started_at"])))
    caught(ledger, lie, path, "timestamps")


def test_jit_of_1e300_seconds(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "jit_seconds 1e300"
    path = plant(tmp_path, genuine, forge(genuine.receipt, lambda r: r.update(jit_seconds=1e300)))
    caught(ledger, lie, path, "timestamps")


def test_peak_rss_zero(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "peak_rss_bytes 0"
    path = plant(tmp_path, genuine, forge(genuine.receipt, lambda r: r.update(peak_rss_bytes=0)))
    caught(ledger, lie, path, "host_resources")


def test_probe_with_999_gbps(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "a probe candidate claiming 999 GB/s"
    path = plant(
        tmp_path,
        genuine,
        forge(genuine.receipt, lambda r: r["phases"]["probe"]["candidates"][0].update(gbps=999.0)),
    )
    caught(ledger, lie, path, "probe")


def test_fabricated_llama_cpp_peer(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "a fabricated llama.cpp peer section with decode ratio 3.0"

    def edit(r: Receipt) -> None:
        bench = copy.deepcopy(r["phases"]["benchmark"])
        for rep in bench["repetitions"]:
            rep["decode_seconds"] = [s * 3 for s in rep["decode_seconds"]]
        r["peer"] = {
            "engine": "llama.cpp",
            "version": "0.3.16",
            "model_sha256": r["model"]["sha256"],
            "threads": r["threads"],
            "settings": {"kv_cache": "f16", "n_batch": 512, "flash_attn": False, "n_ctx": 256},
            "benchmark": bench,
            "decode_ratio": 0.0,
            "prefill_ratio": 0.0,
        }

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "peer")


# --- kernels ---


def _rename(r: Receipt, old: str, new: str) -> None:
    for table in (r["kernel_counts"], r["kernel_choice"]["variants"]):
        for kid in [k for k in table if k.startswith(old)]:
            table[kid.replace(old, new, 1)] = table.pop(kid)
    r["kernels"] = sorted(r["kernel_counts"])


def _tl1_as_i2s_vnni(r: Receipt) -> None:
    _rename(r, "tl1_", "i2s_")
    for entry in r["kernel_choice"]["per_shape"]:
        entry["kernel"] = "i2s"
    r["kernel_choice"]["requested"] = "i2s"
    r["kernel_choice"]["variants"] = {k: "avx512vnni" for k in r["kernel_choice"]["variants"]}


def test_tl1_relabelled_as_i2s_on_avx512vnni(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "tl1 kernels relabelled as i2s on avx512vnni (identical counters)"
    path = plant(tmp_path, genuine, forge(genuine.receipt, _tl1_as_i2s_vnni))
    caught(ledger, lie, path, "kernel_variants")


def test_tl1_relabelled_with_flags_and_probe_to_match(
    genuine: Genuine, ledger: Ledger, tmp_path: Path
) -> None:
    lie = "tl1 relabelled as i2s on avx512vnni, the CPU flags and the probe's kernels edited to match"

    def edit(r: Receipt) -> None:
        _tl1_as_i2s_vnni(r)
        r["host"]["cpu_flags"] = sorted({*r["host"]["cpu_flags"], "avx512_vnni", "avx512vl", "avx512bw"})
        for tensor in r["phases"]["probe"]["tensors"]:
            if tensor["kernel"]:
                tensor["kernel"] = tensor["kernel"].replace("tl1_", "i2s_")

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    verdict = run_verifier(path, "--replay")
    failed = [g["name"] for g in verdict.data["gates"] if g["status"] == "fail"]
    ledger.record(lie, ("--replay",), ", ".join(failed) or "none", verdict)
    if verdict.code == 1:
        # the logits path read its int8 row sums only on avx512vnni: the file's bytes per token differ; the
        # tokens too where tl1 and i2s round differently; an AVX2 host's prefetch choice stays behind
        assert set(failed) <= {"model_binding", "replay", "kernel_variants"}, failed
    else:
        unattested(ledger, lie, path, genuine, "--replay")


def test_per_shape_contradicting_the_counts(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "per_shape naming i2s while the counters show tl1"

    def edit(r: Receipt) -> None:
        r["kernel_choice"]["requested"] = "auto"
        for entry in r["kernel_choice"]["per_shape"]:
            entry["kernel"] = "i2s"

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "kernel_choice")


def test_qk256_ids_on_an_i2s_model(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "qk256 kernel ids on an i2s model"
    path = plant(tmp_path, genuine, forge(genuine.receipt, lambda r: _rename(r, "tl1_", "i2s_qk256_")))
    caught(ledger, lie, path, "kernel_format")


def test_parity_only_ids_with_invented_counts(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "parity-only ids (i2s_q8k_gemv, act_quant_q8k) with invented counts"

    def edit(r: Receipt) -> None:
        for kid in ("i2s_q8k_gemv", "act_quant_q8k"):
            r["kernel_counts"][kid] = {"calls": 1000, "rows": 1000, "elements": 1000}
        r["kernels"] = sorted(r["kernel_counts"])

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "parity_only")


def test_kernel_counter_rows_scaled(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "kernel_counts rows and elements of the GEMV doubled"

    def edit(r: Receipt) -> None:
        for key in ("rows", "elements"):
            r["kernel_counts"]["tl1_gemv"][key] *= 2

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "kernel_expectations")


def test_variants_claimed_with_no_cpu_flags(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "an empty cpu_flags with avx512vnni variants claimed"

    def edit(r: Receipt) -> None:
        r["host"]["cpu_flags"] = []
        r["kernel_choice"]["variants"] = {
            k: "avx512vnni" if k.startswith("i2s_") or k == "logits_i8" else v
            for k, v in r["kernel_choice"]["variants"].items()
        }

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "kernel_variants")


def test_variants_deleted(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "kernel_choice.variants deleted"
    path = plant(tmp_path, genuine, forge(genuine.receipt, lambda r: r["kernel_choice"].pop("variants")))
    verdict = run_verifier(path)
    ledger.record(lie, (), "kernel_variants", verdict)
    assert verdict.code == 0 and verdict.status("kernel_variants") == "not_checked"
    assert "not checked: kernel_variants" in verdict.text
    caught(ledger, lie, path, "signature", "--public-key", genuine.public_key, "--require-signature")


def test_compute_path_mock_relabelled_real(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "a mock run's canned tokens relabelled compute_path real"
    canned = token_digest(list(range(1, 17)))

    def edit(r: Receipt) -> None:
        r["output_digest"]["sha256"] = canned
        for rep in r["phases"]["benchmark"]["repetitions"]:
            rep["output_sha256"] = canned

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    caught(ledger, lie, path, "replay", "--replay")


# --- host and model ---


def test_threads_4096_with_one_core(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "threads 4096 with cores 1"
    path = plant(
        tmp_path,
        genuine,
        forge(genuine.receipt, lambda r: (r.update(threads=4096), r["host"].update(cores=1))),
    )
    caught(ledger, lie, path, "host_resources")


def test_a_bigger_host_claimed(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = 'threads 32 on an "EPYC 9654" with 64 cores'

    def edit(r: Receipt) -> None:
        r["threads"] = 32
        r["host"].update(cores=64, cpu_model="AMD EPYC 9654 96-Core Processor")

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit))
    unattested(ledger, lie, path, genuine, "--replay")


def test_tiny_relabelled_as_the_2b_preset(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "the tiny model relabelled as 2b-4t (shape, sha256, size, counters, 30 per-layer times)"
    big = PRESETS["2b-4t"]

    def edit(r: Receipt) -> None:
        head_dim = big.hidden // big.n_heads
        r["model"].update(
            preset="2b-4t",
            sha256="9f" * 32,
            size_bytes=1_187_000_000,
            n_layers=big.n_layers,
            hidden=big.hidden,
            ffn=big.ffn,
            n_heads=big.n_heads,
            n_kv_heads=big.n_kv_heads,
            head_dim=head_dim,
            vocab_size=big.vocab_size,
            context_length=big.context_length,
            tensors_per_format={"f16": 1, "f32": 4 * big.n_layers + 1, "i2s": 7 * big.n_layers},
        )
        q, kv = big.n_heads * head_dim, big.n_kv_heads * head_dim
        shapes = {
            (q, big.hidden),
            (kv, big.hidden),
            (big.hidden, q),
            (big.ffn, big.hidden),
            (big.hidden, big.ffn),
        }
        r["kernel_choice"]["per_shape"] = [{"shape": list(s), "kernel": "tl1"} for s in sorted(shapes)]
        for step in r["phases"]["timing"]["steps"]:
            step["layers"] = [step["forward"] / big.n_layers * 0.99] * big.n_layers

    path = plant(tmp_path, genuine, forge(genuine.receipt, edit, recount_kernels=True))
    caught(ledger, lie, path, "bandwidth")
    caught(ledger, lie, path, "model_binding", "--model", genuine.receipt["model"]["path"])


def test_one_layer_fewer(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "n_layers 2 -> 1 with the counters recomputed"
    path = plant(
        tmp_path,
        genuine,
        forge(genuine.receipt, lambda r: r["model"].update(n_layers=1), recount_kernels=True),
    )
    caught(ledger, lie, path, "model_facts")
    caught(ledger, lie, path, "model_binding", "--model", genuine.receipt["model"]["path"])


def test_a_missing_model_file_is_never_rebuilt_silently(
    genuine: Genuine, ledger: Ledger, tmp_path: Path
) -> None:
    lie = "--model naming a missing file; --replay of a receipt whose model file is gone"
    verdict = run_verifier(genuine.path, "--model", tmp_path / "missing.gguf")
    ledger.record(lie, ("--model",), "none", verdict)
    assert verdict.code == 2 and "does not exist" in verdict.data["error"]
    moved = forge(genuine.receipt, lambda r: r["model"].update(path=str(tmp_path / "gone.gguf")))
    path = plant(tmp_path, genuine, moved)
    verdict = run_verifier(path, "--replay")
    ledger.record(lie, ("--replay",), "none", verdict)
    assert verdict.code == 2 and "--rebuild-preset" in verdict.data["error"]
    rebuilt = run_verifier(path, "--replay", "--rebuild-preset")  # asked for: the preset, bound by sha256
    assert rebuilt.code == 0 and rebuilt.status("model_binding") == rebuilt.status("replay") == "pass"


def test_a_receipt_from_a_future_harness(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "a receipt claiming a harness version from the future"
    path = plant(tmp_path, genuine, forge(genuine.receipt, lambda r: r["harness"].update(version="9.0.0")))
    caught(ledger, lie, path, "harness_version")


def test_an_edit_without_a_new_checksum(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "a byte edited without recomputing the checksum (an accident)"
    edited = copy.deepcopy(genuine.receipt)
    edited["host"]["os"] += " "
    caught(ledger, lie, plant(tmp_path, genuine, edited), "checksum")


# --- signatures ---


def test_a_forgery_signed_with_the_forgers_own_key(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "a forgery signed by the forger's own key (the HMAC mode let every verifier sign)"
    path = tmp_path / genuine.path.name
    path.write_text(json.dumps(forge(genuine.receipt, _decode_scaled(0.5, prefill=True))))
    sign_receipt_file(path, load_private_key(genuine.forger_key))
    caught(ledger, lie, path, "signature", "--public-key", genuine.public_key)


def test_an_old_signed_receipt_under_a_new_name(genuine: Genuine, ledger: Ledger, tmp_path: Path) -> None:
    lie = "an old signed receipt re-used under a new name"
    renamed = tmp_path / "20991231T000000.000000Z_tiny_cpu_0123456789.json"
    shutil.copyfile(genuine.path, renamed)
    shutil.copyfile(genuine.envelope, envelope_path(renamed))
    caught(ledger, lie, renamed, "signature", "--public-key", genuine.public_key)


def test_the_genuine_receipt_verifies_at_every_level(genuine: Genuine, ledger: Ledger) -> None:
    flags = ("--replay", "--remeasure", "--public-key", genuine.public_key, "--require-signature")
    verdict = run_verifier(genuine.path, *flags)
    ledger.record("none: the genuine receipt", tuple(map(str, flags)), "signature", verdict)
    assert verdict.code == 0, verdict.data
    assert verdict.data["level"] == "attested"
    speed = "; not checked: remeasure" if verdict.busy_remeasure() else ", speed not beyond this host's"
    assert verdict.text.startswith(f"VALID (attested: signed, model bound, replayed{speed}"), verdict.text
    assert finalize(genuine.receipt) == genuine.receipt
