"""OpenRLHF: its TensorBoard logs -> a kit run directory, and a live launcher with the kit's hooks.

Offline:  `rlhf-kit import openrlhf <tensorboard_dir> [-o RUN_DIR]` reads the event files that
OpenRLHF's TensorboardLogger writes (`<logger.tensorboard_dir>/<run_name>/events.out.tfevents.*`,
scalars tagged `train/<key>`), strips `train/`, maps the keys and turns `timing/*` into phases.

Live:     `rlhf-kit openrlhf [-o RUN_DIR] -- <args of openrlhf.cli.train_ppo_ray>` starts Ray with
a `worker_process_setup_hook` (rlhf_kit.adapters.openrlhf_hook.setup) so that, inside OpenRLHF's
remote actors, steps and phases stream into the run directory; then runs train_ppo_ray.

Example:
    rlhf-kit import openrlhf ./tb_logs/my_run -o runs/openrlhf_my_run
    rlhf-kit report runs/openrlhf_my_run

Known limitations:
    - OpenRLHF logs one `timing/make_experience` for reward, old/ref log-probs, values and
      advantages together; it becomes the phase `make_experience`, not the five phases.
    - `kl` is per token (its --kl_estimator), stored as kl_token_mean, not our per-sequence kl_mean.
    - `eval/*` scalars and text samples are not imported.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Sequence

from rlhf_kit.adapters.common import RunWriter, check_key_map, map_metrics, phases_from_times
from rlhf_kit.errors import OneLineParser, UsageError
from rlhf_kit.events import RunInfo
from rlhf_kit.runlog import RunDir, unique_run_dir

# OpenRLHF key (after stripping "train/") -> our metric. rollout/* come first: they are computed
# over the whole batch before dynamic batching, so they win over the per-micro-batch averages.
KEY_MAP: dict[str, str] = {
    "rollout/reward_mean": "reward_mean",
    "rollout/reward_std": "reward_std",
    "rollout/response_length_mean": "response_length_mean",
    "rollout/truncated_rate": "truncated_fraction",
    "reward": "reward_mean",
    "response_length": "response_length_mean",
    "policy_loss": "policy_loss",
    "critic_loss": "value_loss",
    "values": "value_mean",
    "kl": "kl_token_mean",
    "ppo_kl": "approx_kl",
    "ppo_clip_ratio": "clip_fraction",
    "entropy_loss": "entropy",
    "actor_grad_norm": "grad_norm",
    "actor_lr": "learning_rate",
    "timing/generation": "time/rollout",
    "timing/make_experience": "time/make_experience",
    "timing/ppo_train": "time/update",
    "timing/broadcast": "time/comm",
    "timing/step_total": "step_seconds",
}
check_key_map(KEY_MAP)
TRAIN_PREFIX = "train/"
# Keys that are not metrics: the text sample and OpenRLHF's own counters.
DROP: tuple[str, ...] = ("generated_samples",)


def _event_accumulator():
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as e:  # the runtime requirements include tensorboard; say so if it is gone
        raise UsageError("reading OpenRLHF logs needs tensorboard: pip install tensorboard") from e
    return EventAccumulator


def find_event_dir(path: Path) -> Path:
    """The one directory under `path` (itself included) that holds event files.

    Raises:
        UsageError: no such path, no event files, or several runs (name them, ask for one).
    """
    if not path.exists():
        raise UsageError(f"{path} does not exist; pass OpenRLHF's --logger.tensorboard_dir or a run folder in it")
    if path.is_file():
        return path.parent if "tfevents" in path.name else _no_events(path)
    dirs = sorted({p.parent for p in path.rglob("*tfevents*") if p.is_file()})
    if not dirs:
        _no_events(path)
    if len(dirs) > 1:
        names = ", ".join(str(d.relative_to(path)) or "." for d in dirs)
        raise UsageError(f"{path} holds several TensorBoard runs ({names}); pass one of them")
    return dirs[0]


def _no_events(path: Path) -> Path:
    raise UsageError(f"no TensorBoard event files (events.out.tfevents.*) under {path}")


def read_openrlhf_scalars(path: Path) -> tuple[Path, dict[int, dict[str, float]], dict[int, float]]:
    """Read `train/*` scalars of one OpenRLHF TensorBoard run.

    Returns:
        (event dir, {step: {key without "train/": value}}, {step: wall time of its first scalar}).
    Raises:
        UsageError: no readable train/ scalars (empty, torn or foreign event files).
    """
    event_dir = find_event_dir(path)
    acc = _event_accumulator()(str(event_dir), size_guidance={"scalars": 0})  # 0: keep every point
    try:
        acc.Reload()
    except Exception as e:  # tensorboard raises a zoo of record errors on corrupt files
        raise UsageError(f"cannot read the event files in {event_dir}: {e}") from e
    tags = [t for t in acc.Tags().get("scalars", []) if t.startswith(TRAIN_PREFIX)]
    if not tags:
        sizes = sum(p.stat().st_size for p in event_dir.glob("*tfevents*"))
        raise UsageError(f"no train/ scalars in the event files of {event_dir} ({sizes} bytes): "
                         "the file is empty or torn, or it is not an OpenRLHF log")
    steps: dict[int, dict[str, float]] = {}
    walls: dict[int, float] = {}
    for tag in tags:
        for ev in acc.Scalars(tag):
            steps.setdefault(ev.step, {})[tag[len(TRAIN_PREFIX):]] = ev.value
            walls[ev.step] = min(walls.get(ev.step, ev.wall_time), ev.wall_time)
    return event_dir, steps, walls


def import_openrlhf(path: Path, run_dir: RunDir) -> RunDir:
    """Write a run directory from an OpenRLHF TensorBoard log. Returns the run directory."""
    event_dir, steps, walls = read_openrlhf_scalars(path)
    info = RunInfo(run_id=run_dir.root.name, framework="openrlhf",
                   config={"source": str(event_dir.resolve()), "adapter": "rlhf_kit.adapters.openrlhf"})
    writer = RunWriter(run_dir, info)
    try:
        for step in sorted(steps):
            metrics = map_metrics(steps[step], KEY_MAP, drop=DROP)
            when = datetime.fromtimestamp(walls[step]).isoformat(timespec="seconds")
            # OpenRLHF's step logs carry no epoch (its "episode" is not logged): epoch 0
            writer.write_step(step, 0, metrics, phases_from_times(metrics, step), timestamp=when)
    finally:
        writer.close()
    return run_dir


# ---- live path -------------------------------------------------------------------------
ENV_RUN_DIR = "RLHF_KIT_RUN_DIR"
SETUP_HOOK = "rlhf_kit.adapters.openrlhf_hook.setup"


def ray_runtime_env(run_dir: RunDir) -> dict:
    """The runtime_env that makes every Ray worker run our setup hook and find the run dir."""
    env = {
        ENV_RUN_DIR: str(run_dir.root.resolve()),
        # the values train_ppo_ray would have set had it started Ray itself
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
    }
    return {"worker_process_setup_hook": SETUP_HOOK, "env_vars": env}


def launch_main(argv: Sequence[str] | None = None) -> int:
    """`rlhf-kit openrlhf [-o RUN_DIR] -- <train_ppo_ray args>`: run OpenRLHF with the kit's hooks."""
    args = list(sys.argv[1:] if argv is None else argv)
    ours, theirs = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    parser = OneLineParser(prog="rlhf-kit openrlhf",
                           description="Run openrlhf.cli.train_ppo_ray with the kit's hooks in its Ray actors.")
    parser.add_argument("-o", "--output", help="run directory (default runs/openrlhf_<time>)")
    opts = parser.parse_args(ours)
    if not theirs:
        raise UsageError("give OpenRLHF's arguments after --, e.g. rlhf-kit openrlhf -- --actor.model_name_or_path ...")
    try:
        import ray
        import openrlhf.cli.train_ppo_ray  # noqa: F401  (fail here, with a hint, not inside Ray)
    except ImportError as e:
        raise UsageError(f"the live OpenRLHF path needs OpenRLHF and Ray on a GPU machine "
                         f"(pip install openrlhf[vllm]); import failed: {e}") from e
    run_dir = RunDir(Path(opts.output)) if opts.output else unique_run_dir("runs", datetime.now().strftime("openrlhf_%Y%m%d_%H%M%S"))
    if run_dir.exists():
        raise UsageError(f"{run_dir.root} already holds a run; pass a new -o directory")
    run_dir.create()
    ray.init(runtime_env=ray_runtime_env(run_dir))  # train_ppo_ray skips its own ray.init when Ray is up
    import runpy

    sys.argv = ["openrlhf.cli.train_ppo_ray", *theirs]
    runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
    print(f"run directory: {run_dir.root}")
    return 0
