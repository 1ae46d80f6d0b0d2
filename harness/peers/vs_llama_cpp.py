"""`benchmark --vs-llama-cpp`: upstream llama.cpp on the same file, its rounds interleaved with the engine's.

llama.cpp (through llama-cpp-python, the optional `parity` extra) runs only the SiLU `bitnet` architecture
with TQ1_0/TQ2_0 weights, so both engines run the file `llama_cpp.reference_file` gives: the model itself, or
its copy converted beside it (I2_S rewritten as TQ2_0, the LLaMA-3 pre-tokenizer key added). Each round is
one engine generation then one llama.cpp generation of the same prompt and length, both greedy, in one
process, so drift and a neighbour's load hit both alike. llama.cpp keeps the settings its own users run
with (F16 KV cache, batch 512, no flash attention); the receipt records them.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.peers.llama_cpp import open_llama, reference_version
from harness.phases.benchmark import repetition_row
from harness.receipts.summary import peer_ratios

PEER_ENGINE = "llama.cpp"
N_BATCH = 512
CTX_ROUND = 256
SETTINGS: dict[str, str | int | bool] = {"kv_cache": "f16", "n_batch": N_BATCH, "flash_attn": False}


class LlamaCppRunner:
    """Greedy generation timed like the engine's: prefill of the whole prompt, then one timed step per token.

    As in engine.generate, the first token comes from the prefill logits and the last one needs no step, so a
    generation of N tokens has N - 1 decode latencies; EOS ends it early.
    """

    def __init__(self, path: Path, n_ctx: int, threads: int) -> None:
        self.threads = threads
        self.n_ctx = -(-n_ctx // CTX_ROUND) * CTX_ROUND
        self.llm = open_llama(path, threads, n_ctx=self.n_ctx, n_batch=N_BATCH, flash_attn=False)
        self.version = reference_version()
        self.eos = int(self.llm.token_eos())

    def settings(self) -> dict[str, str | int | bool]:
        return {**SETTINGS, "n_ctx": self.n_ctx}

    def generation(self, prompt: list[int], tokens: int) -> tuple[dict[str, Any], list[int]]:
        """One benchmark row (the engine's row format) and the generated ids."""
        llm = self.llm
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill = time.perf_counter() - start
        out: list[int] = []
        steps: list[float] = []
        ttft = prefill
        while len(out) < tokens:
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if token == self.eos:
                break
            out.append(token)
            if len(out) == 1:
                ttft = time.perf_counter() - start
            if len(out) == tokens:
                break
            step = time.perf_counter()
            llm.eval([token])
            steps.append(time.perf_counter() - step)
        return repetition_row(prefill, ttft, steps, out), out


def peer_section(
    runner: LlamaCppRunner, model_sha256: str, engine_bench: dict[str, Any], peer_bench: dict[str, Any]
) -> dict[str, Any]:
    """The receipt's `peer` section."""
    return {
        "engine": PEER_ENGINE,
        "version": runner.version,
        "model_sha256": model_sha256,
        "threads": runner.threads,
        "settings": runner.settings(),
        "benchmark": peer_bench,
        **peer_ratios(engine_bench["repetitions"], peer_bench["repetitions"]),
    }
