"""The training loop: epochs x steps of PPO, with hooks, logging sinks, checkpoints and resume.

`train(config, hooks)` is what `python train.py`, `rlhf-kit train` and `rlhf-kit profile` run;
instruments come in through `hooks` (rlhf_kit/cli.py decides which).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from rlhf_core.config import TrainConfig, parse_config
from rlhf_kit.errors import UsageError
from rlhf_kit.events import Alert, PhaseRecord, RunInfo
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook, TensorBoardHook, find_runs, read_jsonl, unique_run_dir

PROMPTS = (
    "The movie was", "I think that the food", "Today the weather is", "My favourite book is",
    "The service at the hotel", "This new phone", "Our trip to the mountains", "The concert last night",
    "Working from home is", "The best thing about Mondays",
)

__all__ = ["train", "main", "parse_config", "resolve_device", "PROMPTS"]


def resolve_device(name: str) -> str:
    """'auto' -> cuda if available else cpu. Raises UsageError for CUDA on a machine without it."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for, but this machine has no CUDA device; use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return name


def find_checkpoint(resume: str, output_dir: str) -> Path:
    """--resume value -> a checkpoint file: a .pt path, a run directory, or 'latest'."""
    if resume == "latest":
        runs = [r for r in find_runs(output_dir) if (r.checkpoints / "latest.pt").exists()]
        if not runs:
            raise UsageError(f"--resume latest: no run with a checkpoint under '{output_dir}'")
        return runs[0].checkpoints / "latest.pt"
    path = Path(resume)
    if path.is_dir():
        path = RunDir(path).checkpoints / "latest.pt"
    if not path.is_file():
        raise UsageError(f"--resume '{resume}': no such checkpoint (give a .pt file, a run directory, or 'latest')")
    return path


def prepare_run_dir(cfg: TrainConfig, checkpoint: Path | None) -> RunDir:
    """The run directory: the checkpoint's own when resuming, else a new one; checks it is writable."""
    if checkpoint is not None:
        run_dir = RunDir(checkpoint.resolve().parent.parent)
    else:
        run_dir = unique_run_dir(cfg.run.output_dir, cfg.run.run_name or None)
    try:
        run_dir.create()
        probe = run_dir.logs / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--output_dir '{cfg.run.output_dir}' cannot be written: {e.strerror}") from None
    return run_dir


def set_aside_later_steps(run_dir: RunDir, step: int) -> None:
    """On resume from step k, move log lines of steps > k to *.before-resume files (nothing is lost)."""
    for path in (run_dir.train_log, run_dir.phases_log, run_dir.alerts_log):
        records = read_jsonl(path)
        if any(r.get("step", 0) > step for r in records):
            shutil.copyfile(path, path.with_suffix(".jsonl.before-resume"))
            keep = [line for line, r in zip(_lines(path), records) if r.get("step", 0) <= step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(keep))
            os.replace(tmp, path)


def _lines(path: Path) -> list[str]:
    return [line + "\n" for line in path.read_text().split("\n") if line.strip()]


class ConsoleHook:
    """The seed's console lines, printed above a progress bar."""

    def __init__(self, cfg: TrainConfig, total: int, initial: int, show_bar: bool = True):
        self.cfg = cfg
        self.bar = None
        if cfg.run.progress and show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="PPO", unit="step", file=sys.stderr,
                            dynamic_ncols=True, leave=False)
        self.epoch_rows: list[dict] = []

    def write(self, text: str) -> None:
        (self.bar.write if self.bar else print)(text)

    def on_step_end(self, record: dict, phases: list[PhaseRecord]) -> None:
        self.epoch_rows.append(record)
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(reward=f"{record.get('reward_mean') or 0:.3f}", kl=f"{record.get('kl_mean') or 0:.3f}")
        local = (record["step"] - 1) % self.cfg.run.steps_per_epoch
        if local % 5 == 0 or local == self.cfg.run.steps_per_epoch - 1:
            self.write(f"Epoch {record['epoch']}, Step {local}: Loss={_f(record, 'total_loss')}, "
                       f"Reward={_f(record, 'reward_mean')}, KL={_f(record, 'kl_mean')}")

    def on_alert(self, alert: Alert) -> None:
        self.write(f"ALERT [{alert.severity}] step {alert.step}: {alert.message}"
                   + (f" Try: {alert.what_to_try}" if alert.what_to_try else ""))

    def epoch_summary(self, epoch: int) -> None:
        rows, self.epoch_rows = self.epoch_rows, []
        if rows:
            avg = lambda k: sum(r.get(k) or 0.0 for r in rows) / len(rows)  # noqa: E731
            self.write(f"\nEpoch {epoch} complete:\n  Avg Reward: {avg('reward_mean'):.4f}\n"
                       f"  Avg KL: {avg('kl_mean'):.4f}\n  Avg Loss: {avg('total_loss'):.4f}\n")

    def on_run_end(self) -> None:
        if self.bar:
            self.bar.close()


def _f(record: dict, key: str) -> str:
    v = record.get(key)
    return "nan" if v is None else f"{v:.4f}"


def versions() -> dict[str, str]:
    import platform

    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def train(cfg: TrainConfig, hooks: Sequence[Any] = (), timing: bool = True) -> RunDir:
    """Run PPO as configured; under torchrun, this rank's part of data-parallel PPO. Returns the run directory."""
    from rlhf_core.distributed import init_distributed

    dist = init_distributed(cfg, resolve_device(cfg.run.device))  # one process: a no-op context
    try:
        with dist.quiet_unless_main():
            return _train(cfg, hooks, timing, dist)
    finally:
        dist.close()


def _train(cfg: TrainConfig, hooks: Sequence[Any], timing: bool, dist: Any) -> RunDir:
    import torch

    from rlhf_core.models import model_spec
    from rlhf_core.policy import PolicyModel
    from rlhf_core.distributed import make_trainer
    from rlhf_core.ppo import set_seed
    from rlhf_core.reward import ToyRewardModel
    from rlhf_core.samples import format_samples, greedy_completions, write_samples

    device = dist.device
    checkpoint = find_checkpoint(cfg.run.resume, cfg.run.output_dir) if cfg.run.resume else None
    run_dir = dist.from_main(lambda: prepare_run_dir(cfg, checkpoint))  # one directory for all ranks
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    set_seed(cfg.run.seed)
    print(f"Starting RLHF training run: {run_dir.root}\nDevice: {device}, Seed: {cfg.run.seed}")

    policy = PolicyModel(cfg.model.model_name, device)
    trainer = make_trainer(dist, policy, policy.frozen_copy(), ToyRewardModel(device, tokenizer=policy.tokenizer),
                           device, config=cfg)
    start_step = 0
    if checkpoint is not None:
        start_step = trainer.load_checkpoint(str(checkpoint))["step"]
        if dist.is_main:
            set_aside_later_steps(run_dir, start_step)
        print(f"Resumed from {checkpoint} at step {start_step}")
    print("Models initialized successfully")
    print(f"Created {len(PROMPTS)} sample prompts")
    # rank 0 alone prints and writes the samples (other ranks would collide on samples.json)
    shown = PROMPTS[:min(cfg.run.sample_prompts, len(PROMPTS))] if dist.is_main else ()
    if shown:  # greedy: draws no random numbers, so training is unchanged by it
        before = greedy_completions(policy.model, policy.tokenizer, shown, cfg.rollout.max_new_tokens)
        print(f"\nSamples before training (greedy):\n{format_samples(shown, before)}")

    total = cfg.run.epochs * cfg.run.steps_per_epoch
    print("\nStarting training loop...")
    console = ConsoleHook(cfg, total, start_step, show_bar=dist.is_main)
    dist.barrier()  # rank 0 has set aside old log lines before any rank opens the logs
    sinks: list[Any] = [RunLogHook(run_dir, write_steps=dist.is_main)]
    if cfg.run.tensorboard and dist.is_main:
        sinks.append(TensorBoardHook(run_dir.tb, purge_step=start_step + 1 if start_step else None))
    bus = HookBus([*sinks, console, *hooks], device=device, rank=dist.rank, timing=timing)
    trainer.bus = bus
    bus.run_start(RunInfo(run_id=run_dir.root.name, config=cfg.to_dict(), model=model_spec(policy.model),
                          device=device, device_name=torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
                          versions=versions(), world_size=dist.world_size))
    bus.setup(trainer.modules(), trainer.optimizer)

    t0 = time.perf_counter()
    try:
        _loop(cfg, trainer, bus, console, run_dir, start_step, total, dist)
    finally:
        bus.run_end()
    if shown:
        after = greedy_completions(policy.model, policy.tokenizer, shown, cfg.rollout.max_new_tokens)
        print(f"\nSamples before and after training (greedy):\n{format_samples(shown, before, after)}")
        write_samples(run_dir.root / "samples.json", shown, before, after)
    print(f"\nTraining completed successfully!\nTotal time: {time.perf_counter() - t0:.2f} seconds\n"
          f"Total steps: {total}\nOutput directory: {run_dir.root}\nLogs: {run_dir.train_log}\n"
          f"TensorBoard: {run_dir.tb}\nCheckpoints: {run_dir.checkpoints}")
    return run_dir


def _loop(cfg: TrainConfig, trainer: Any, bus: HookBus, console: ConsoleHook, run_dir: RunDir,
          start_step: int, total: int, dist: Any) -> None:
    import torch

    from rlhf_core.distributed import rank_seed

    batch = dist.local_batch(cfg.rollout.batch_size)  # each rank draws its own share of the global batch
    prompt_rng = torch.Generator().manual_seed(rank_seed(cfg.run.seed, dist.rank) + 2)
    for _ in range(start_step):  # replay the prompt draws of finished steps: resume == uninterrupted
        torch.randint(len(PROMPTS), (batch,), generator=prompt_rng)
    for step in range(start_step + 1, total + 1):
        epoch = (step - 1) // cfg.run.steps_per_epoch + 1
        if (step - 1) % cfg.run.steps_per_epoch == 0:
            console.write(f"Starting epoch {epoch}/{cfg.run.epochs}")
        idx = torch.randint(len(PROMPTS), (batch,), generator=prompt_rng).tolist()
        bus.begin_step(step)
        metrics = trainer.train_step([PROMPTS[i] for i in idx], cfg.rollout.max_new_tokens)
        end_of_epoch = step % cfg.run.steps_per_epoch == 0
        due = step % cfg.run.save_every == 0 if cfg.run.save_every else end_of_epoch
        if due or step == total:
            with bus.phase("checkpoint"):
                path = run_dir.checkpoints / f"step_{step}.pt"
                trainer.save_checkpoint(str(path))  # a collective under torchrun; rank 0 writes
                if dist.is_main:
                    _link_latest(path)
        bus.end_step(step, epoch, metrics)
        if end_of_epoch:
            console.epoch_summary(epoch)


def _link_latest(path: Path) -> None:
    """checkpoints/latest.pt -> the newest step file (a hard link: no second copy on disk)."""
    latest = path.with_name("latest.pt")
    tmp = path.with_name("latest.pt.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, latest)


def main(argv: Sequence[str] | None = None, hooks: Sequence[Any] = ()) -> int:
    """`python train.py [flags]`."""
    train(parse_config(argv), hooks=hooks)
    return 0
