"""`rlhf-kit`: the one place that wires the runner and the instruments together.

Each subcommand lives in its own module and is imported only when called, so
`rlhf-kit report` never pays for importing torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from rlhf_kit.errors import UsageError, run_main

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("rlhf_kit.cli", "train_main", "train PPO with the kit's runner (same flags as train.py)"),
    "profile": ("rlhf_kit.cli", "profile_main", "short training under the profiler; phase table, traces, flame graph"),
    "calibrate": ("rlhf_kit.profiler.cli", "calibrate_main", "measure this machine's matmul peak for MFU (cached)"),
    "report": ("rlhf_kit.dashboard.cli", "report_main", "write a self-contained HTML report of one or more runs"),
    "dashboard": ("rlhf_kit.dashboard.cli", "dashboard_main", "serve a live local dashboard of a runs directory"),
    "health": ("rlhf_kit.stability.cli", "main", "text report of runs: metrics, stability alerts with causes, phases"),
    "memory": ("rlhf_kit.cli", "memory_main", "predict per-model memory of a PPO setup and suggest what fits"),
    "import": ("rlhf_kit.adapters.cli", "import_main", "turn OpenRLHF TensorBoard logs or veRL JSONL into a run directory"),
    "openrlhf": ("rlhf_kit.adapters.openrlhf", "launch_main", "run OpenRLHF's train_ppo_ray with the kit's hooks"),
    "metrics-doc": ("rlhf_kit.cli", "metrics_doc_main", "print docs/metrics.md generated from the METRICS table"),
}


def instrument_hooks(config) -> list:
    """The instruments a training run of the kit's runner gets: the live stability monitor always,
    measured memory (memory.json) with --memory."""
    from rlhf_kit.stability.monitor import StabilityMonitor

    hooks: list = [StabilityMonitor()]
    if config.run.memory:
        from rlhf_kit.memory.measure import MemoryHook

        hooks.append(MemoryHook(output_dir=config.run.output_dir))
    return hooks


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python train.py` / `rlhf-kit train`: the runner with the default instruments attached."""
    import rlhf_core.train as runner

    config = runner.parse_config(argv)
    runner.train(config, hooks=instrument_hooks(config))
    return 0


def profile_main(argv: Sequence[str] | None = None) -> int:
    """`rlhf-kit profile`: the profiler gets our runner passed in (it never imports rlhf_core)."""
    from rlhf_kit.profiler.cli import main

    if argv and "--compare" in argv:  # comparing saved runs needs no runner (and no torch)
        return main(argv)
    import rlhf_core.train as runner

    return main(argv, runner=runner)


def metrics_doc_main(argv: Sequence[str] | None = None) -> int:
    from rlhf_kit.events import metrics_markdown

    if argv:
        raise UsageError(f"metrics-doc takes no arguments, got {' '.join(argv)}")
    print(metrics_markdown())
    return 0


def memory_main(argv: Sequence[str] | None = None) -> int:
    """`rlhf-kit memory`, with the runner's embedded presets passed in (rlhf_kit.memory never imports rlhf_core)."""
    from rlhf_kit.memory.cli import main

    def presets(name: str):
        try:
            from rlhf_core import models
        except ImportError:  # the instruments work without the runner: presets are then unknown
            return None
        if name not in models.PRESETS and name not in models.ALIASES and name not in models.REAL_MODELS:
            return None
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(models.resolve(name)[0])  # builds the preset once, cached

    return main(argv, presets=presets)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: rlhf-kit COMMAND [ARGS]\n\ncommands:\n{rows}\n\nrlhf-kit COMMAND --help shows a command's flags."


def dispatch(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        raise UsageError(f"unknown command '{name}'; choose from {', '.join(COMMANDS)}")
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)(rest) or 0


def main() -> None:
    run_main(dispatch, prog="rlhf-kit")


if __name__ == "__main__":
    main()
