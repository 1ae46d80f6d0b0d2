"""The issue-8 parity matrix: tiny and small presets, bitnet arch, TQ2_0 and TQ1_0, three seeds each.

Writes one JSON report per model into the output folder and prints the markdown table of docs/parity.md:
per model a row for each engine mode and one for llama.cpp against itself (the noise floor).
Usage: python scripts/parity_matrix.py [OUT_DIR] (needs the `parity` extra; models are cached presets).
"""

import json
import sys
import time
from pathlib import Path

from engine.constants import ARCH_BITNET
from engine.synth import ensure_preset_model
from harness.peers.parity import run_parity

PRESETS = ("tiny", "small")
FORMATS = ("tq2_0", "tq1_0")
SEEDS = (0, 1, 2)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "parity-reports")
    out.mkdir(parents=True, exist_ok=True)
    print(
        "| preset | format | seed | engine mode | tokenizer | min cosine | top-5 overlap | top-1 | "
        "max abs err | greedy 4x32 | pass |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in PRESETS:
        for fmt in FORMATS:
            for seed in SEEDS:
                start = time.perf_counter()
                path = ensure_preset_model(preset, fmt, ARCH_BITNET, seed)
                report = run_parity(path, kernel="i2s")
                report["seconds"] = time.perf_counter() - start
                name = f"{preset}-{fmt}-seed{seed}.json"
                (out / name).write_text(json.dumps(report, indent=1, ensure_ascii=False))
                tok = report["tokenizer"]
                for run in report["runs"]:
                    lg, gr = run["logits"], run["greedy"]
                    matched = sum(r["match"] for r in gr["runs"])
                    diverge = [r["first_divergence"] for r in gr["runs"] if not r["match"]]
                    greedy = f"{matched}/{len(gr['runs'])}" + (
                        f" (first diff at {diverge})" if diverge else ""
                    )
                    print(
                        f"| {preset} | {fmt} | {seed} | {run['engine']['act_quant']} | "
                        f"{tok['ids_identical']}+{tok['detokenized_identical']}/{2 * tok['strings']} | "
                        f"{lg['min_cosine']:.9f} | {lg['mean_top5_overlap']:.3f} | "
                        f"{lg['top1_agreement']:.3f} | "
                        f"{lg['max_abs_logit_error']:.3g} | {greedy} | {'yes' if run['passed'] else 'no'} |",
                        flush=True,
                    )
                own = report["reference_checks"][0]
                diverge = [d for d in own["first_divergence"] if d is not None]
                greedy = f"{own['greedy_matching']}/{own['greedy_runs']}" + (
                    f" (first diff at {diverge})" if diverge else ""
                )
                print(
                    f"| {preset} | {fmt} | {seed} | llama.cpp vs itself, token by token | | "
                    f"{own['logits']['min_cosine']:.9f} | {own['logits']['mean_top5_overlap']:.3f} | "
                    f"{own['logits']['top1_agreement']:.3f} | {own['logits']['max_abs_logit_error']:.3g} | "
                    f"{greedy} | |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
