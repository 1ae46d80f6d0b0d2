"""Offline training of the committed byte-level BPE merges (engine/data/bpe_merges.txt.gz).

Synthetic models need a real tokenizer and nothing may be downloaded, so the merges are learned once from text
every Python installation has (a sorted, size-bounded subset of the standard library's sources) plus the
project's own docs, and committed. Nothing trains at run time: `engine.tokenizer_data` reads the committed
file. Regenerate with `python scripts/train_tokenizer.py --out engine/data/bpe_merges.txt.gz`; the header line
records the corpus (file count, bytes, sha256, Python version) so a rerun on the same corpus is checkable.
"""

import argparse
import gzip
import hashlib
import json
import platform
import sysconfig
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, trainers

from engine.atomic import atomic_write
from engine.errors import EngineError
from engine.tokenizer_data import (
    BYTE_TO_UNICODE,
    MERGES_HEADER_PREFIX,
    MERGES_RESOURCE,
    llama3_pre_tokenizer,
    tokens_from_merges,
)

DEFAULT_MERGES = 32000
MAX_CORPUS_BYTES = 24 * 2**20
MAX_FILE_BYTES = 2 * 2**20
# Test suites hold deliberately odd text; vendored third-party code is not the standard library.
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"})
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def stdlib_sources(max_bytes: int = MAX_CORPUS_BYTES) -> list[Path]:
    """Sorted UTF-8 *.py files of the running Python's standard library, stopping before max_bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chosen: list[Path] = []
    total = 0
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        if EXCLUDED_DIRS.intersection(path.relative_to(root).parts[:-1]) or not path.is_file():
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            continue
        if total + size > max_bytes:
            break
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        chosen.append(path)
        total += size
    return chosen


def project_docs(root: Path = PROJECT_ROOT) -> list[Path]:
    """The project's own prose: README.md and docs/**/*.md, sorted."""
    docs = sorted((root / "docs").rglob("*.md")) if (root / "docs").is_dir() else []
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + docs


def _texts(paths: Sequence[Path]) -> Iterator[str]:
    for path in paths:
        yield Path(path).read_text(encoding="utf-8", errors="replace")


def train_bpe(paths: Sequence[Path], n_merges: int) -> tuple[list[str], list[str]]:
    """Learn up to n_merges byte-level BPE merges (LLaMA-3 split pattern) from the files, in training order.

    Returns (tokens, merges): the 256 byte tokens in byte order followed by each new merge result, and the
    merges as "a b" strings in GPT-2 byte-to-unicode form. Fewer come back when the corpus runs out of pairs.
    """
    if n_merges < 0:
        raise EngineError(f"n_merges must be >= 0, got {n_merges}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = llama3_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=len(BYTE_TO_UNICODE) + n_merges,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=list(BYTE_TO_UNICODE),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_texts(paths), trainer=trainer, length=len(paths))
    raw = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in raw][:n_merges]
    return tokens_from_merges(merges), merges


def _corpus_digest(paths: Sequence[Path]) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    for path in paths:
        data = Path(path).read_bytes()
        total += len(data)
        digest.update(len(data).to_bytes(8, "little") + data)
    return total, digest.hexdigest()


def merges_file_bytes(merges: Sequence[str], header: dict[str, object]) -> bytes:
    """The committed file: a JSON header line, one merge per line, gzip with a fixed mtime (reproducible)."""
    lines = [MERGES_HEADER_PREFIX + json.dumps(header, sort_keys=True), *merges]
    text = "".join(line + "\n" for line in lines)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def main(argv: Sequence[str] | None = None) -> None:
    """Train on the standard library subset plus the project docs and write the committed merges file."""
    parser = argparse.ArgumentParser(prog="python scripts/train_tokenizer.py", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "engine" / "data" / MERGES_RESOURCE)
    parser.add_argument("--merges", type=int, default=DEFAULT_MERGES)
    parser.add_argument("--max-bytes", type=int, default=MAX_CORPUS_BYTES)
    args = parser.parse_args(argv)
    stdlib = stdlib_sources(args.max_bytes)
    docs = project_docs()
    paths = stdlib + docs
    total, sha = _corpus_digest(paths)
    start = time.perf_counter()
    _, merges = train_bpe(paths, args.merges)
    seconds = time.perf_counter() - start
    header = {
        "merges": len(merges),
        "split_pattern": "llama3",
        "corpus_files": len(paths),
        "corpus_stdlib_files": len(stdlib),
        "corpus_docs": [p.relative_to(PROJECT_ROOT).as_posix() for p in docs],
        "corpus_bytes": total,
        "corpus_sha256": sha,
        "python": platform.python_version(),
    }
    payload = merges_file_bytes(merges, header)
    with atomic_write(args.out) as fh:
        fh.write(payload)
    print(
        f"trained {len(merges)} merges on {len(paths)} files ({total / 2**20:.1f} MiB) in {seconds:.1f} s; "
        f"wrote {args.out} ({len(payload)} bytes, corpus sha256 {sha[:16]})"
    )


if __name__ == "__main__":
    main()
