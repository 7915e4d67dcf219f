"""`rlhf-kit import {openrlhf,verl} SOURCE [-o RUN_DIR]`: another framework's logs -> a run directory.

Example:
    rlhf-kit import openrlhf ./tb_logs/exp1 -o runs/exp1
    rlhf-kit import verl ./metrics.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlhf_kit.errors import OneLineParser, UsageError
from rlhf_kit.runlog import RunDir, unique_run_dir

FRAMEWORKS = ("openrlhf", "verl")


def _target(output: str | None, framework: str, source: Path) -> RunDir:
    """The run directory to write: -o as given (must not hold a run), else runs/<fw>_<source>."""
    if output:
        run_dir = RunDir(Path(output))
        if run_dir.exists():
            raise UsageError(f"{run_dir.root} already holds a run; pass a new -o directory")
        return run_dir
    stem = source.resolve().name.split(".")[0] or "import"
    return unique_run_dir("runs", f"{framework}_{stem}")


def import_main(argv: Sequence[str] | None = None) -> int:
    """Import a finished OpenRLHF or veRL run. Prints the run directory; exit 0."""
    parser = OneLineParser(prog="rlhf-kit import",
                           description="Turn OpenRLHF TensorBoard logs or veRL JSONL into a kit run directory.")
    parser.add_argument("framework", choices=FRAMEWORKS, help="whose logs these are")
    parser.add_argument("source", help="openrlhf: TensorBoard log dir; verl: file-logger JSONL")
    parser.add_argument("-o", "--output", help="run directory to create (default runs/<framework>_<source>)")
    args = parser.parse_args(argv)
    source = Path(args.source)
    if args.framework == "openrlhf":
        from rlhf_kit.adapters.openrlhf import import_openrlhf

        # both importers read and validate the source before they create the run directory
        run_dir = import_openrlhf(source, _target(args.output, "openrlhf", source))
    else:
        from rlhf_kit.adapters.verl import import_verl

        run_dir = import_verl(source, _target(args.output, "verl", source))
    from rlhf_kit.runlog import load_run

    run = load_run(run_dir.root)
    print(f"imported {len(run.steps)} steps, {len(run.phases)} phase records, {len(run.alerts)} alerts "
          f"from {args.framework} into {run_dir.root}")
    return 0
