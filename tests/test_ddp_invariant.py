"""Data-parallel PPO == single-process PPO on the concatenated batch (2 gloo processes on CPU).

A fixed rollout of 4 sequences with different response lengths is made once. Two spawned ranks each
take 2 sequences and run DDPPPOTrainer.learn (global whitening, DDP update); one process runs the
plain PPOTrainer over all 4. Parameters, advantages and the logged statistics must agree to float
rounding. Different lengths matter: a plain DDP gradient average would weigh each rank's token mean
equally and differ from the token mean over the global batch.
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.slow

WORLD = 2
CASES = {  # name -> config overrides
    "whole_batch_head": {"ppo_epochs": 2, "mini_batch_size": 0, "value_model": "head", "sgd": False},
    "mini_batches_separate_critic": {"ppo_epochs": 2, "mini_batch_size": 2, "value_model": "separate", "sgd": True},
}
# AdamW's first steps move each weight by about lr whatever the gradient's scale, which would hide a
# wrong weighting of the ranks' gradients; plain SGD moves weights in proportion to the gradient.
EXACT_METRICS = ("reward_mean", "reward_std", "reward_min", "reward_max", "kl_mean", "kl_std", "kl_k3_mean",
                 "return_mean", "value_mean", "explained_variance", "response_length_mean",
                 "response_length_std", "truncated_fraction", "grad_norm", "update_ratio", "policy_drift_kl")


def make_config(case: str):
    from rlhf_core.config import TrainConfig

    cfg = TrainConfig()
    over = CASES[case]
    cfg.model.value_model = over["value_model"]
    cfg.rollout.batch_size, cfg.rollout.max_new_tokens = 4, 6
    cfg.ppo.ppo_epochs, cfg.ppo.mini_batch_size = over["ppo_epochs"], over["mini_batch_size"]
    cfg.ppo.learning_rate = 1e-2  # large steps, so a wrong gradient weighting shows in the weights
    return cfg.validate()


def make_trainer(case, dist=None):
    from rlhf_core.distributed import DDPPPOTrainer
    from rlhf_core.policy import PolicyModel
    from rlhf_core.ppo import PPOTrainer, set_seed
    from rlhf_core.reward import ToyRewardModel

    cfg = make_config(case)
    set_seed(cfg.run.seed)
    policy = PolicyModel("tiny-gpt2", "cpu", quiet=True)
    args = (policy, policy.frozen_copy(), ToyRewardModel("cpu", tokenizer=policy.tokenizer), "cpu")
    trainer = DDPPPOTrainer(*args, config=cfg, dist=dist) if dist else PPOTrainer(*args, config=cfg)
    if CASES[case]["sgd"]:
        trainer.optimizer = torch.optim.SGD(trainer.params, lr=0.5)
    return trainer


def fixed_rollout(trainer):
    """4 sampled sequences, then response lengths forced to 6, 2, 5, 1 tokens and distinct scores."""
    r = trainer.make_rollout(["The movie was", "I think that the food", "Today the weather is", "This new phone"], 6)
    keep = torch.tensor([6, 2, 5, 1])
    r.mask = (torch.arange(6)[None] < keep[:, None]).float()                       # (4, 6)
    r.attention_mask[:, r.response_start:] = r.mask.long()
    r.scores = torch.tensor([0.9, -0.4, 0.1, 0.6])
    return r


def take(r, rows):
    return r.select(torch.tensor(rows))


def metrics_of(trainer, r, kl, upd):
    if hasattr(trainer, "_gather_stats"):
        r, kl, upd = trainer._gather_stats(r, kl, upd)
    return trainer._metrics(r, kl, upd)


def reference_update(trainer, r, case):
    """The single-process update. With mini-batches, visit the global mini-batches the ranks form:
    each rank draws the same permutation of its 2 local rows from the shared shuffle seed. Rank k holds
    global rows k and k + 2."""
    kl = trainer.compute_advantages(r)
    if CASES[case]["mini_batch_size"] == 0:
        return kl, trainer.update(r)
    shuffle = torch.Generator().manual_seed(trainer.cfg.run.seed + 1)
    rows, before = [], [p.detach().clone() for p in trainer.params]
    for _ in range(trainer.cfg.ppo.ppo_epochs):
        for local in torch.randperm(2, generator=shuffle):
            mb = take(r, [int(local) * 2, int(local) * 2 + 1])  # rank k's local row l is global row k + 2l
            stats = trainer._losses(mb)
            stats["loss"].backward()
            stats.update(trainer._optimizer_step(stats.pop("loss")))
            rows.append(stats)
    upd = {k: torch.stack([row[k] for row in rows]) for k in rows[0]}
    delta = torch.stack([(a - b).norm() for a, b in zip(trainer.params, before)]).norm()
    upd["update_ratio"] = (delta / torch.stack([b.norm() for b in before]).norm()).reshape(1)
    upd["policy_drift_kl"] = (upd.pop("drift_sum")[-2:].sum() / 4).reshape(1)
    return kl, upd


def worker(rank: int, rdv: str, out: str) -> None:
    from rlhf_core.distributed import DistContext

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=WORLD)
    try:
        result = {}
        for case in CASES:
            r = torch.load(os.path.join(out, f"rollout_{case}.pt"), weights_only=False)
            trainer = make_trainer(case, DistContext(rank=rank, world_size=WORLD))
            local = take(r, [rank, rank + 2])
            kl, upd = trainer.learn(local)
            metrics = metrics_of(trainer, local, kl, upd)
            result[case] = {"params": [p.detach().clone() for p in trainer.params],
                            "advantages": local.advantages, "metrics": metrics}
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    reference = {}
    for case in CASES:
        trainer = make_trainer(case)
        r = fixed_rollout(trainer)
        torch.save(r, out / f"rollout_{case}.pt")
        kl, upd = reference_update(trainer, r, case)
        reference[case] = {"params": trainer.params, "advantages": r.advantages,
                           "metrics": metrics_of(trainer, r, kl, upd)}
    torch.multiprocessing.spawn(worker, args=(str(out / "rdv"), str(out)), nprocs=WORLD, join=True)
    ranks = [torch.load(out / f"rank{i}.pt", weights_only=False) for i in range(WORLD)]
    return reference, ranks


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_update_equals_single_process_update(results, case):
    reference, ranks = results
    ref_params = reference[case]["params"]
    initial = make_trainer(case).params
    moved = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(ref_params, initial))
    assert moved > 1e-4  # the update did move the weights, so agreement below means something
    for rank in ranks:
        for got, want in zip(rank[case]["params"], ref_params):
            torch.testing.assert_close(got, want.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_global_whitening_matches_the_concatenated_batch(results, case):
    reference, ranks = results
    adv = reference[case]["advantages"]                              # (4, N), rows 0..3
    for rank, res in enumerate(ranks):
        torch.testing.assert_close(res[case]["advantages"], adv[[rank, rank + 2]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_logged_statistics_are_global(results, case):
    reference, ranks = results
    want = reference[case]["metrics"]
    for res in ranks:
        got = res[case]["metrics"]
        for key in EXACT_METRICS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    # loss statistics are averages of per-rank token means: equal on every rank, close to the global one
    assert ranks[0][case]["metrics"]["policy_loss"] == ranks[1][case]["metrics"]["policy_loss"]
