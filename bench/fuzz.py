"""Fuzzing: the suite's property tests (``tests/data/test_fuzz.py``) with many more inputs.

Label CSVs and ``metadata.jsonl`` files of any text (BOM, CRLF, quoting, padding, NaN/inf, hostile
file names) and images of every supported format (random bytes, truncations, bit flips). For each
property it prints how many inputs were tried, how many failures were found (Hypothesis stops at
the first one and shrinks it) and the time taken.

    .venv/bin/python bench/fuzz.py --examples 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

TESTS = ("test_label_csv", "test_metadata_jsonl", "test_random_bytes_are_refused_with_a_reason",
         "test_truncated_and_bit_flipped_images", "test_a_damaged_exif_block_never_escapes")
CHECKS = ("check_rows_kept_or_skipped", "check_decode")


def main() -> None:
    """Run every property with ``--examples`` inputs and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="inputs per property (default 5000)")
    args = parser.parse_args()
    os.environ["VITUNE_FUZZ_EXAMPLES"] = str(args.examples)  # read when the test module is imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
    import test_fuzz

    tried = {"n": 0}
    for name in CHECKS:  # count every input that reaches a check
        real = getattr(test_fuzz, name)
        setattr(test_fuzz, name, lambda *a, _real=real, **k: (tried.__setitem__("n", tried["n"] + 1), _real(*a, **k))[1])
    print("| property | inputs tried | failures found | seconds |\n|---|---:|---:|---:|")
    total_failures = 0
    for test in TESTS:
        tried["n"], start, failure = 0, time.perf_counter(), ""
        try:
            getattr(test_fuzz, test)()
        except Exception as exc:  # a falsified property: Hypothesis re-raises the shrunk failing input
            failure = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
        total_failures += bool(failure)
        print(f"| {test.removeprefix('test_')} | {tried['n']:,} | {int(bool(failure))}{failure} "
              f"| {time.perf_counter() - start:.1f} |", flush=True)
    sys.exit(1 if total_failures else 0)


if __name__ == "__main__":
    main()
