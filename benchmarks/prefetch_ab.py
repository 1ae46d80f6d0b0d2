"""Decode steps of the 2b-4t preset with the AVX2 prefetch distances set by hand, settings alternating in one
process, so that a shared host's drift falls on every setting alike.

    python benchmarks/prefetch_ab.py --threads 1 --rounds 16 \
        --setting 4096=matrix:4096,logits:8192 --setting per-width=chosen

A setting names a distance per kind ("matrix", "logits") or per kind and width ("matrix 6912"); "chosen"
keeps what this host measured (engine.kernel_choice.prefetch_choice). Each round runs 8 profiled decode steps
per setting from the same position; with --threads 1 the step is CPU time (time the scheduler gave to other
processes is not counted). Prints, per setting, the medians of ffn_down and of the step, and the step's ratio
to the first setting round by round (median and range).
"""

import argparse
import json
import statistics
import time

from engine.model import load_model
from engine.synth import ensure_preset_model

STEPS_PER_ROUND = 8


def parse_setting(text: str) -> tuple[str, dict[str, int]]:
    """'name=matrix:4096,logits 2560:8192' -> (name, {kind or 'kind cols': bytes}); 'name=chosen' -> {}."""
    name, _, spec = text.partition("=")
    if spec == "chosen":
        return name, {}
    return name, {k.strip(): int(v) for k, v in (item.rsplit(":", 1) for item in spec.split(","))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--position", type=int, default=160, help="decode from this many prompt tokens")
    ap.add_argument("--setting", action="append", required=True, help="name=kind:bytes,... or name=chosen")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    settings = dict(parse_setting(s) for s in args.setting)
    model = load_model(ensure_preset_model("2b-4t", "i2s"), threads=args.threads)
    model.warmup()
    choices = {(c.kind, c.cols): c for c in model.prefetch_choices()}
    if not choices:
        raise SystemExit("no kernel of this model runs on the AVX2 path here")
    chosen = {key: int(c.distance) for key, c in choices.items()}
    vocab = model.config.vocab_size
    model.prefill([(i * 7919) % vocab for i in range(args.position)])
    clock = time.process_time if args.threads == 1 else time.perf_counter
    steps = {name: [] for name in settings}
    down = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, setting in settings.items():
            for (kind, cols), choice in choices.items():
                choice.plan[0] = setting.get(f"{kind} {cols}", setting.get(kind, chosen[(kind, cols)]))
            model.pos = args.position
            times, downs = [], []
            for _ in range(STEPS_PER_ROUND):
                profile: dict = {}
                start = clock()
                model.decode(1, profile, by_kernel=True)
                times.append(clock() - start)
                downs.append(profile["kernels"]["ffn_down"])
            steps[name].append(1e3 * statistics.median(times))
            down[name].append(1e3 * statistics.median(downs))
    for (kind, cols), choice in choices.items():
        choice.plan[0] = chosen[(kind, cols)]
    first = next(iter(settings))
    result = {
        "threads": args.threads,
        "chosen": {f"{k} {c}": d for (k, c), d in chosen.items()},
        "settings": {},
    }
    for name in settings:
        ratios = [a / b for a, b in zip(steps[name], steps[first], strict=True)]
        result["settings"][name] = {
            "ffn_down_ms": statistics.median(down[name]),
            "step_ms": statistics.median(steps[name]),
            "step_ratio": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"chosen on this host: {result['chosen']}")
    for name, r in result["settings"].items():
        low, high = r["ratio_range"]
        print(
            f"{name:12s} ffn_down {r['ffn_down_ms']:.2f} ms, step {r['step_ms']:.2f} ms, "
            f"{r['step_ratio']:.3f}x of {first} ({low:.2f}-{high:.2f})"
        )


if __name__ == "__main__":
    main()
