"""Gates on what ran: the kernel ids, their counters, the kernel choice and the instruction-set variants.

The counters depend only on the model's shape and the workload, not on which family ran, so they cannot tell
i2s from tl1; the per-shape kernel choice, the model's weight format and the host's CPU flags can.
"""

from engine.constants import VARIANT_FEATURES, WEIGHT_FORMATS
from engine.formats import i2s
from engine.kernel_choice import PREFETCH_TOLERANCE, fastest_distance, prefetch_kind
from engine.trace import KERNEL_IDS
from harness.receipts.checks import Check
from harness.receipts.expectations import (
    FAMILY_KERNELS,
    PARITY_ONLY,
    Expectation,
    expected_counts,
    family_of,
    format_kernels,
    is_ternary,
    matrix_shapes,
    per_kernel_expectations,
    probe_expectations,
    workload_from_receipt,
)
from harness.receipts.kind import BENCHMARK, receipt_kind

_FALLBACK_PREFIXES = ("fp32_", "fallback_", "dequant_")
_FALLBACK_SUFFIXES = ("_dequant", "_fallback")
_GPU_PREFIXES = ("cuda_", "cublas_", "gemm_", "wmma_")
LOGITS_KERNELS = ("logits_i8", "fp32_logits")
# /proc/cpuinfo spells one LLVM feature name differently
_CPUINFO_NAMES = {"avx512vnni": "avx512_vnni"}
# The kernels each CPU-specific path exists for (engine.kernels.cpu); "portable" runs every kernel.
_VARIANT_KERNELS = {
    "avx512bw": ("tl1_", "tl2_"),
    "avx512vnni": ("i2s_gemv", "i2s_gemm", "i2s_blk_", "i2s_qk256_", "logits_i8"),
    "avx2": ("i2s_gemv", "i2s_gemm", "i2s_blk_", "i2s_qk256_", "logits_i8"),
}


def is_fallback(kernel_id: str) -> bool:
    return (
        kernel_id.startswith(_FALLBACK_PREFIXES)
        or kernel_id.endswith(_FALLBACK_SUFFIXES)
        or kernel_id == "matmul_f32"
    )


def is_gpu(kernel_id: str) -> bool:
    return kernel_id.startswith(_GPU_PREFIXES) or "_gpu_" in f"_{kernel_id}_"


def variant_flags(variant: str) -> tuple[str, ...]:
    """The /proc/cpuinfo flags a kernel variant needs (engine.constants.VARIANT_FEATURES, cpuinfo names)."""
    return tuple(_CPUINFO_NAMES.get(f, f) for f in VARIANT_FEATURES[variant])


def counted(c: Check) -> set[str]:
    return {k for k, v in c.receipt["kernel_counts"].items() if v["calls"] > 0}


def compute_path(c: Check) -> None:
    if c.receipt["compute_path"] != "real":
        c.fail(
            "'real'",
            repr(c.receipt["compute_path"]),
            "Only receipts of the engine's real kernels count; rerun without mock or reference compute.",
        )


def backend(c: Check) -> None:
    if c.receipt["backend"] != "cpu":
        c.fail(
            "'cpu'",
            repr(c.receipt["backend"]),
            "This harness has kernel ids for the cpu backend only; other backends cannot be verified here.",
        )


def ternary_kernel(c: Check) -> None:
    kernels = c.receipt["kernels"]
    if not [k for k in kernels if is_ternary(k) and not is_fallback(k)]:
        c.fail(
            "at least one ternary kernel id (i2s_*, tl1_*, tl2_*) that is not a fallback",
            kernels or "no kernels",
            "The run did not execute a ternary matmul; check the kernel choice and the model format.",
        )


def gpu_kernels(c: Check) -> None:
    gpu = [k for k in c.receipt["kernels"] if is_gpu(k)]
    if gpu and c.receipt["backend"] == "cpu":
        c.fail(
            "no GPU kernel ids on a cpu receipt",
            gpu,
            "GPU kernels cannot run on the cpu backend; this kernel list did not come from the trace.",
        )


def known_kernels(c: Check) -> None:
    ids = set(c.receipt["kernels"]) | set(c.receipt["kernel_counts"])
    unknown = sorted(k for k in ids if k not in KERNEL_IDS and not is_gpu(k))
    if unknown:
        c.fail(
            "ids from engine.trace.KERNEL_IDS",
            unknown,
            "Kernel ids must come from the engine's trace; use a harness that knows these ids or rerun.",
        )


def parity_only(c: Check) -> None:
    found = sorted((set(c.receipt["kernels"]) | set(c.receipt["kernel_counts"])) & set(PARITY_ONLY))
    if found:
        c.fail(
            "no parity-only kernel ids in a benchmark receipt",
            found,
            "These kernels run only in `parity`'s llama.cpp-style activation path, never in a benchmark.",
        )


def kernel_counts(c: Check) -> None:
    listed = list(c.receipt["kernels"])
    counts = c.receipt["kernel_counts"]
    not_counted = [k for k in listed if counts.get(k, {}).get("calls", 0) <= 0]
    if not_counted:
        c.fail(
            "every listed kernel with calls > 0 in kernel_counts",
            f"never counted: {not_counted}",
            "List only kernels the trace saw executing.",
        )
    not_listed = [k for k, v in counts.items() if v["calls"] > 0 and k not in listed]
    if not_listed:
        c.fail(
            "every counted kernel in kernels",
            f"counted but not listed: {not_listed}",
            "Take `kernels` from the trace snapshot that produced kernel_counts.",
        )
    zero = [k for k, v in counts.items() if v["calls"] <= 0]
    if zero:
        c.fail(
            "calls > 0 for every kernel_counts entry",
            f"zero calls: {zero}",
            "Record only ids that ran (engine.trace.Trace.snapshot).",
        )


def kernel_format(c: Check) -> None:
    """Every ternary kernel that ran is one that can run the model's weight format."""
    model = c.receipt["model"]
    formats = {model["format"]} | {f for f in model["tensors_per_format"] if f in WEIGHT_FORMATS}
    allowed = set().union(*(format_kernels(f) for f in formats))
    alien = sorted(k for k in counted(c) | set(c.receipt["kernels"]) if is_ternary(k) and k not in allowed)
    if alien:
        c.fail(
            f"ternary kernels of a {'/'.join(sorted(formats))} model ({', '.join(sorted(allowed))})",
            alien,
            "These kernels read another weight format; they cannot have run on this model.",
        )


def shape_families(c: Check) -> dict[tuple[int, int], str]:
    """kernel_choice.per_shape as (rows, cols) -> family."""
    return {
        (int(e["shape"][0]), int(e["shape"][1])): e["kernel"] for e in c.receipt["kernel_choice"]["per_shape"]
    }


def kernel_choice(c: Check) -> None:
    """The family chosen per matrix shape covers the model's shapes and is what the counters and the probe
    show."""
    r = c.receipt
    choice, model = r["kernel_choice"], r["model"]
    families = shape_families(c)
    wanted = set(matrix_shapes(model))
    listed = [tuple(e["shape"]) for e in choice["per_shape"]]
    if set(families) != wanted or len(listed) != len(families):
        c.fail(
            f"one per_shape entry for each matrix shape of the model {sorted(wanted)}",
            sorted(listed),
            "kernel_choice.per_shape must come from the model's own kernel selection.",
        )
    if choice["requested"] != "auto" and set(families.values()) - {choice["requested"]}:
        c.fail(
            f"every shape on the requested family {choice['requested']!r}",
            sorted(set(families.values())),
            "A forced --kernel runs every matrix on that family.",
        )
    ran = {family_of(k) for k in counted(c) if is_ternary(k)}
    chosen = {families[s] for s in wanted & set(families)}
    # a probe receipt counts every candidate family the probe timed, the chosen ones among them
    if ran != chosen and not (receipt_kind(r) == "probe" and chosen <= ran):
        c.fail(
            f"the families counted ({', '.join(sorted(ran)) or 'none'})",
            f"per_shape families {', '.join(sorted(chosen)) or 'none'}",
            "The kernel choice and the trace contradict each other; one of them was edited.",
        )
    elif set(families) == wanted and "benchmark" in r["phases"]:
        _check_ids_per_family(c, families)
    _check_probe_kernels(c, families)


def _check_ids_per_family(c: Check, families: dict[tuple[int, int], str]) -> None:
    fmt = c.receipt["model"]["format"]
    if any((family, fmt) not in FAMILY_KERNELS for family in families.values()):
        return  # a family that cannot run this format: kernel_format names it
    work = workload_from_receipt(c.receipt)
    groups = per_kernel_expectations(c.receipt["model"], work, families)
    got = {k for k in counted(c) if is_ternary(k)}
    allowed = {k for e in groups for k in e.ids}
    if got - allowed or any(not got & set(e.ids) for e in groups):
        c.fail(
            f"the ternary ids the per-shape choice gives a {fmt} model: {sorted(e.group for e in groups)}",
            sorted(got),
            "The kernel ids must be those of the chosen families for this weight format.",
        )


def _check_probe_kernels(c: Check, families: dict[tuple[int, int], str]) -> None:
    probe = c.receipt["phases"].get("probe")
    if probe is None:
        return
    gemvs = {k for k in counted(c) if k.endswith("_gemv")}
    for tensor in probe["tensors"]:
        kid, shape = tensor["kernel"], tuple(tensor["shape"])
        if kid is None or len(shape) != 2:
            continue
        if families.get(shape) != family_of(kid) or (gemvs and kid not in gemvs):
            c.fail(
                f"probe tensor {tensor['name']} on the chosen {families.get(shape)} kernel, counted",
                kid,
                "The probe's record of each matrix's kernel contradicts the kernel choice or the trace.",
            )
            return


def kernel_variants(c: Check) -> None:
    """Each ternary and logits kernel that ran names its instruction-set path; the host has its features."""
    r = c.receipt
    variants = r["kernel_choice"].get("variants")
    if variants is None:
        c.skip("the receipt records no kernel variants (written before they were recorded, or deleted)")
    ran = counted(c)
    stray = sorted(set(variants) - ran)
    if stray:
        c.fail(
            "variants only for kernels that ran",
            stray,
            "kernel_choice.variants must describe the counted kernels (harness.receipts.build).",
        )
    unnamed = sorted(k for k in ran if (is_ternary(k) or k in LOGITS_KERNELS) and k not in variants)
    if unnamed:
        c.fail(
            "a variant for every ternary and logits kernel that ran",
            unnamed,
            "Record which instruction-set path (or the portable kernel) produced each one.",
        )
    flags = set(r["host"]["cpu_flags"])
    for kernel, variant in sorted(variants.items()):
        if variant not in VARIANT_FEATURES:
            c.fail(f"a variant of {', '.join(VARIANT_FEATURES)}", f"{kernel}: {variant}", "Unknown path.")
            continue
        if variant != "portable" and not kernel.startswith(_VARIANT_KERNELS.get(variant, ())):
            c.fail(
                f"{kernel} on a path that exists for it (the {variant} path runs "
                f"{', '.join(_VARIANT_KERNELS[variant])})",
                f"{kernel} on {variant}",
                "The engine has no such kernel; the variant was relabelled.",
            )
        missing = [f for f in variant_flags(variant) if f not in flags]
        if missing:
            c.fail(
                f"host cpu_flags with {', '.join(variant_flags(variant))} for {kernel} on {variant}",
                f"missing {', '.join(missing)}",
                "This variant cannot have run on this host; the receipt's kernel choice is not its own.",
            )
    _check_prefetch(c, r["kernel_choice"].get("prefetch"), variants, r["model"])
    choice = r["kernel_choice"]
    _check_decode_block(c, choice.get("decode_block"), variants, ran, choice["per_shape"])


def _check_decode_block(
    c: Check, block: object, variants: dict[str, str], ran: set[str], per_shape: list
) -> None:
    """The compiled decode block runs every matrix through i2s_gemv of its own variant: a receipt that names a
    block beside i2s_gemv on another path, a matrix shape on another family, or another layout's GEMV (the
    probe may time tl1 / tl2 on the same shapes) contradicts itself."""
    if block is None:
        return
    families = sorted({entry["kernel"] for entry in per_shape})
    layouts = sorted(k for k in ran if k.endswith("_gemv") and k.startswith("i2s_") and k != "i2s_gemv")
    if variants.get("i2s_gemv") != block or families != ["i2s"] or layouts:
        c.fail(
            f"decode_block {block}: i2s_gemv on the {block} path, every shape on i2s, no other i2s layout",
            f"i2s_gemv on {variants.get('i2s_gemv')}, families {families}, other layouts {layouts}",
            "The decode block runs every matrix through i2s_gemv of its own variant.",
        )


def _check_prefetch(c: Check, prefetch: object, variants: dict[str, str], model: dict) -> None:
    """The AVX2 kernels' prefetch distances: recorded only when an AVX2 variant ran, each one of the
    distances timed and the shortest within PREFETCH_TOLERANCE of the fastest (engine.kernel_choice); one
    per kind and row width, at widths this model's matrices (or its logits) have."""
    if not isinstance(prefetch, dict):
        return  # older receipts and hosts without the AVX2 path record none
    avx2_kinds = {prefetch_kind(k) for k, v in variants.items() if v == "avx2"}
    if not avx2_kinds:
        c.fail(
            "kernel_choice.prefetch only beside an avx2 variant", "prefetch with no avx2 kernel", "Cannot be."
        )
        return
    if "targets" not in prefetch:  # written before the distance was chosen per row width
        choices = [
            (kind, None, prefetch[f"{kind}_bytes"], prefetch["timings_gb_per_s"].get(kind, {}))
            for kind in ("matrix", "logits")
        ]
    else:
        choices = [(t["kind"], t["cols"], t["bytes"], t["timings_gb_per_s"]) for t in prefetch["targets"]]
        widths = {
            # the execution layout pads rows to whole I2_S blocks
            "matrix": {-(-cols // i2s.BLOCK_VALUES) * i2s.BLOCK_VALUES for _, cols in matrix_shapes(model)},
            "logits": {model["hidden"]},
        }
        seen = [(kind, cols) for kind, cols, _, _ in choices]
        stray = sorted(
            f"{kind} {cols}" for kind, cols in seen if kind not in avx2_kinds or cols not in widths[kind]
        )
        if stray or len(set(seen)) != len(seen):
            c.fail(
                "one prefetch target per avx2 kernel kind and row width of this model",
                ", ".join(stray) or "a target twice",
                "Each distance is timed for the rows its kernels stream.",
            )
        if prefetch["cached"] != all(t["cached"] for t in prefetch["targets"]):
            c.fail(
                "prefetch.cached = every target cached",
                prefetch["cached"],
                "The summary contradicts the targets.",
            )
    for kind, cols, chosen, timings in choices:
        name = kind if cols is None else f"{kind} {cols}"
        if not timings:
            c.fail(f"timings of the {name} prefetch distances", "none", "The choice must show its evidence.")
            continue
        want = fastest_distance(timings)
        if chosen != want:
            c.fail(
                f"{name} prefetch = {want} bytes (shortest within {PREFETCH_TOLERANCE:.0%} of the fastest)",
                chosen,
                "The prefetch distance follows from its recorded timings.",
            )


def kernel_expectations(c: Check) -> None:
    r = c.receipt
    counts = r["kernel_counts"]
    kind = receipt_kind(r)
    if kind == "probe":
        ids = sorted(set(r["kernels"]) | set(counts))
        _hold_counters(c, probe_expectations(r["phases"]["probe"], ids), "the probe's candidate calls")
        return
    if kind not in (BENCHMARK, "timing"):
        c.skip(f"no benchmark or timing phase ({kind}): the counters cover no recorded workload")
    work = workload_from_receipt(r)
    int8_logits = counts["logits_i8"]["calls"] if "logits_i8" in counts else 0
    expectations = expected_counts(r["model"], work, sorted(set(r["kernels"]) | set(counts)), int8_logits)
    families = shape_families(c)
    fmt = r["model"]["format"]
    if set(families) == set(matrix_shapes(r["model"])) and all(
        (f, fmt) in FAMILY_KERNELS for f in families.values()
    ):
        expectations += per_kernel_expectations(r["model"], work, families)
    _hold_counters(
        c,
        expectations,
        f"{work.prefill_forwards} prefills of {r['prompt']['token_count']} tokens, {work.decode_steps} "
        f"decode steps of a {r['model']['n_layers']}-layer model",
    )


def _hold_counters(c: Check, expectations: list[Expectation], work: str) -> None:
    counts = c.receipt["kernel_counts"]
    for exp in expectations:
        for name, bounds in (("calls", exp.calls), ("rows", exp.rows), ("elements", exp.elements)):
            if bounds is None:
                continue
            total = sum(counts[k][name] for k in exp.ids if k in counts)
            lo, hi = bounds
            if not lo <= total <= hi:
                c.fail(
                    f"{exp.group} {name} {lo if lo == hi else f'{lo}..{hi}'}",
                    f"{total}",
                    f"Counters must cover exactly the counted work ({work}); see "
                    "harness/receipts/expectations.py.",
                )
