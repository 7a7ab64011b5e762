"""Runs one fuzz target under atheris (libFuzzer) for a bounded time.

    python -m tests.fuzz.run validation --seconds 60            # findings go to a temp folder
    python -m tests.fuzz.run envelope --seconds 600 --grow      # also keeps new inputs

The seed corpus of each target is kept in the repository (tests/fuzz/corpus/TARGET) and read
at every run; new interesting inputs go to a temporary folder, or into that corpus with
`--grow` (commit what it adds). A crash writes the input to `--artifacts` (default: a temp
folder) and exits non-zero; `make test` runs each target for a few seconds, `make test-long`
for minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import atheris

CORPUS = Path(__file__).parent / "corpus"
INSTRUMENTED = [
    "shared.json_input",
    "shared.validation",
    "shared.events",
    "services.serving.v2",
    "services.serving.v2_binary",
    "services.serving.grpc_server",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=["validation", "envelope", "v2", "grpc"])
    parser.add_argument("--seconds", type=int, default=10, help="how long to fuzz")
    parser.add_argument("--grow", action="store_true", help="write new inputs into the kept corpus")
    parser.add_argument("--artifacts", type=Path, help="folder for crashing inputs")
    args = parser.parse_args()

    # NOTE: only the parsing modules are instrumented; instrumenting every import (sklearn,
    # faust) took longer than a short run's whole budget.
    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.targets import TARGETS

    seeds = CORPUS / args.target
    scratch = Path(tempfile.mkdtemp(prefix=f"ctloop-fuzz-{args.target}-"))
    artifacts = args.artifacts or scratch
    corpora = [str(seeds)] if args.grow else [str(scratch), str(seeds)]
    libfuzzer_args = [
        sys.argv[0],
        *corpora,
        f"-max_total_time={args.seconds}",
        f"-artifact_prefix={artifacts}/",
        "-max_len=65536",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer_args, TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
