"""MemoryHook: per-phase categories match exact counts from the parameter shapes."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rlhf_kit.hooks import HookBus  # noqa: E402
from rlhf_kit.profiler.memory import LiveTensorBytes, MemoryHook  # noqa: E402


def _setup():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    policy = transformers.GPT2LMHeadModel(cfg)
    reference = transformers.GPT2LMHeadModel(cfg).requires_grad_(False)
    value = torch.nn.Linear(16, 1)
    trainable = [p for m in (policy, value) for p in m.parameters()]
    return policy, reference, value, trainable, torch.optim.AdamW(trainable, lr=1e-3)


def _step(bus, step, policy, reference, value, opt):
    ids = torch.randint(0, 64, (2, 8))
    bus.begin_step(step)
    with bus.phase("rollout"):
        with torch.no_grad():
            policy.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    with bus.phase("ref_logprobs"), torch.no_grad():
        reference(ids, use_cache=False)
    with bus.phase("update"):
        with bus.phase("forward"):
            out = policy(ids, output_hidden_states=True, use_cache=False)
            loss = out.logits.mean() + value(out.hidden_states[-1]).mean()
        with bus.phase("backward"):
            loss.backward()
        with bus.phase("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
    return bus.end_step(step, 0, {})


def test_update_categories_match_parameter_shapes():
    policy, reference, value, trainable, opt = _setup()
    hook = MemoryHook("cpu", track_steps={2})
    phases_by_step = {}
    collect = type("Collect", (), {"on_step_end": lambda self, rec, ph: phases_by_step.__setitem__(rec["step"], ph)})()
    bus = HookBus([hook, collect])
    bus.setup({"policy": policy, "reference": reference, "value": value}, opt)
    for step in (1, 2):
        _step(bus, step, policy, reference, value, opt)
    upd = {p.name: p for p in phases_by_step[2]}["update"].memory
    # exact counts from shapes, fp32 = 4 bytes; GPT-2 ties lm_head to wte, so the policy counts it once
    n_policy = sum(p.numel() for p in policy.parameters())
    n_value = 16 + 1
    assert upd["params_policy"] == 4 * n_policy
    assert upd["params_reference"] == 4 * n_policy
    assert upd["params_value"] == 4 * n_value
    assert upd["params"] == 4 * (2 * n_policy + n_value)
    assert upd["grads"] == 4 * (n_policy + n_value)  # seen just before optimizer.step()
    # AdamW: exp_avg + exp_avg_sq per trainable element, plus one fp32 `step` scalar per tensor
    assert upd["optim"] == 4 * 2 * (n_policy + n_value) + 4 * len(trainable)
    assert upd["activations_peak"] > 0 and upd["peak"] >= upd["rss"] - upd["delta"]
    assert {p.name: p for p in phases_by_step[1]}["update"].memory.get("activations") is None  # untracked step


def test_live_tensor_bytes_counts_new_storage_once():
    x = torch.ones(100)  # created outside the mode: not counted
    with LiveTensorBytes() as counter:
        y = x * 2            # new 400-byte storage
        z = y.view(10, 10)   # view: same storage, not counted again
        y.add_(1)            # in place: nothing new
        assert counter.live == 400 and z.numel() == 100
        w = torch.empty(50)  # 200 more
        assert counter.live == 600
        del w
        assert counter.live == 400 and counter.peak == 600
