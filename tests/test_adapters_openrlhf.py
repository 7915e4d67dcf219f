"""The OpenRLHF live hook against OpenRLHF's real classes (openrlhf 0.11.2, installed --no-deps).

Ray, DeepSpeed, vLLM, flash-attn and the other GPU-only packages are stubbed (the way OpenRLHF's
own CPU tests stand in for them); OpenRLHF's trainer code runs for real: PPOTrainer.fit's loop,
train_step, ppo_train, broadcast_to_vllm, save_logs_and_checkpoints and its TensorboardLogger.
Only the remote work is replaced: vLLM generation, the remote model forwards, the actors' fit.
The harness runs in a subprocess so the stubs never leak into other tests.

The same run then goes through both adapter paths: the live hook's run directory and
`rlhf-kit import openrlhf` of the TensorBoard log OpenRLHF itself wrote must agree.
"""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("openrlhf", reason="pip install --no-deps openrlhf==0.11.2 (see Makefile)")

STUBBED = ("ray", "deepspeed", "vllm", "flash_attn", "peft", "pylatexenc", "aiohttp", "torchdata",
           "bitsandbytes", "wandb")
STEPS = 3


class _StubFinder:
    """Import hook: any module under STUBBED becomes a permissive stand-in."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in STUBBED:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        mod = mock.MagicMock(name=spec.name)
        mod.__spec__, mod.__path__, mod.__name__ = spec, [], spec.name
        if spec.name == "ray":
            mod.remote = lambda *a, **k: a[0] if a and isinstance(a[0], type) else (lambda cls: cls)
            mod.get = lambda refs: refs  # the fake groups below return results, not object refs
        return mod

    def exec_module(self, module):
        pass


def ns(**kw) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kw)


def harness(out: Path) -> None:
    """Run OpenRLHF's real PPOTrainer.fit for STEPS steps with the kit's hook installed."""
    import torch

    sys.meta_path.insert(0, _StubFinder())
    from openrlhf.trainer import ppo_trainer as pt
    from openrlhf.trainer.ppo_utils import experience_maker as em
    from openrlhf.trainer.ppo_utils import samples_generator as sg

    def fake_generate(self, **kwargs):  # stands in for vLLM
        self.calls = getattr(self, "calls", 0) + 1
        return [object()] * 2, None, 2, self.calls >= STEPS

    def fake_make_experience(self, rollout_samples):  # stands in for the remote model forwards
        step = self.calls = getattr(self, "calls", 0) + 1
        return [ns(sequences=torch.tensor([[1, 2, 3]]), response_length=torch.tensor([4.0, 6.0]),
                   truncated=torch.tensor([0.0, 1.0]),
                   info={"reward": torch.tensor([0.1 * step, 0.3 * step])})]

    sg.SamplesGenerator.generate_samples = fake_generate
    em.RemoteExperienceMaker.make_experience_batch = fake_make_experience

    from rlhf_kit.adapters.openrlhf_hook import install
    from rlhf_kit.runlog import RunDir

    install(RunDir(out / "live"))

    class ActorGroup:  # stands in for the Ray actor group of PolicyModelActor
        def __init__(self):
            self.fits = 0

        def async_run_method_batch(self, method_name, **kw):
            return []

        def async_run_method(self, method_name, **kw):
            if method_name != "fit":
                return []
            self.fits += 1
            return [{"policy_loss": -0.01 * self.fits, "kl": 0.002 * self.fits, "entropy_loss": 2.0,
                     "actor_grad_norm": 0.5, "ppo_clip_ratio": 0.1, "ppo_kl": 0.001, "actor_lr": 1e-6,
                     "reward": 0.2 * self.fits, "response_length": 5.0}]

    args = ns(algo=ns(kl=ns(target=None, init_coef=0.01), dynamic_filtering_enable=False,
                       advantage=ns(estimator="reinforce")),
              logger=ns(wandb=ns(key=None, run_name="exp"), tensorboard_dir=str(out / "tb"), logging_steps=1),
              ckpt=ns(save_steps=float("inf"), best_metric_key="", path=str(out / "ckpt"), load_enable=False),
              train=ns(num_episodes=1, dynamic_batch_enable=False), eval=ns(steps=float("inf")),
              rollout=ns(batch_size=2, n_samples_per_prompt=1), critic=ns(freezing_steps=-1),
              ds=ns(enable_sleep=False), vllm=ns(enable_sleep=False),
              actor=ns(num_nodes=1, num_gpus_per_node=2))
    tokenizer = ns(decode=lambda ids, skip_special_tokens=True: ["a sample"])
    trainer = object.__new__(pt.PPOTrainer)
    pt.BasePPOTrainer.__init__(trainer, ns(args=args), ActorGroup(), None, None, None, [object()], tokenizer)
    trainer.prompts_dataloader = type("Loader", (), {"__len__": lambda s: 6, "state_dict": lambda s: {}})()
    trainer.eval_dataloader, trainer.generate_kwargs = None, {}
    trainer.samples_generator = object.__new__(sg.SamplesGenerator)
    trainer.samples_generator.strategy = trainer.strategy  # as SamplesGenerator.__init__ sets it
    trainer.fit()  # OpenRLHF's real loop: 3 steps, then the generator reports the data exhausted


def rank_harness(out: Path) -> None:
    """ActorPPOTrainer.ppo_train (a policy rank) wrapped by the hook; its CUDA body replaced."""
    sys.meta_path.insert(0, _StubFinder())
    from openrlhf.trainer.ray import ppo_actor as pa

    pa.ActorPPOTrainer.ppo_train = lambda self, kl_ctl: {"policy_loss": 0.0}
    from rlhf_kit.adapters.openrlhf_hook import install
    from rlhf_kit.runlog import RunDir

    install(RunDir(out / "ranks"))
    actor = object.__new__(pa.ActorPPOTrainer)
    for _ in range(2):
        assert pa.ActorPPOTrainer.ppo_train(actor, 0.01) == {"policy_loss": 0.0}


def _run(mode: str, out: Path) -> None:
    res = subprocess.run([sys.executable, __file__, mode, str(out)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_live_hook_in_real_openrlhf_trainer(tmp_path):
    from rlhf_kit.runlog import load_run

    _run("trainer", tmp_path)
    live = load_run(tmp_path / "live")
    assert live.info.framework == "openrlhf" and live.info.world_size == 2
    assert [r["step"] for r in live.steps] == [1, 2, 3]
    s = live.steps[1]
    # rollout stats computed by OpenRLHF's own _compute_rollout_stats: rewards [0.2, 0.6]
    assert s["reward_mean"] == pytest.approx(0.4) and s["reward_std"] == pytest.approx(0.28284, rel=1e-4)
    assert s["kl_token_mean"] == pytest.approx(0.004) and s["entropy"] == 2.0
    assert s["response_length_mean"] == 5.0 and s["truncated_fraction"] == 0.5
    names = {p.name for p in live.phases if p.step == 2}
    assert names == {"rollout", "make_experience", "update", "comm", "checkpoint"}

    # the TensorBoard log OpenRLHF wrote itself, imported offline, tells the same story
    res = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "import", "openrlhf", str(tmp_path / "tb"),
                          "-o", str(tmp_path / "imported")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    imported = load_run(tmp_path / "imported")
    assert [r["step"] for r in imported.steps] == [1, 2, 3]
    for a, b in zip(live.steps, imported.steps):
        for key in ("reward_mean", "reward_std", "kl_token_mean", "entropy", "grad_norm", "policy_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key  # TB stores float32
    assert {p.name for p in imported.phases if p.step == 2} == {"rollout", "make_experience", "update", "comm"}


def test_rank_hook_writes_phases_only(tmp_path):
    from rlhf_kit.runlog import load_run

    _run("ranks", tmp_path)
    run = load_run(tmp_path / "ranks")
    assert run.info is None and run.steps == []  # ranks never write run.json or train.jsonl
    assert [(p.name, p.step, p.rank) for p in run.phases] == [("update", 1, 0), ("update", 2, 0)]


if __name__ == "__main__":
    {"trainer": harness, "ranks": rank_harness}[sys.argv[1]](Path(sys.argv[2]))
