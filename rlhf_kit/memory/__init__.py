"""Memory optimizer: per-role, per-category memory of a PPO setup, predicted and measured.

    config.py    MemoryConfig, model resolution, sizes and budgets
    tracker.py   ByteTracker: a TorchDispatchMode that follows live storage bytes by role/category
    program.py   the PPO step that is traced (rollout, scoring, update) on any causal LM
    predict.py   predict(cfg) -> Prediction, on fake tensors
    analytic.py  closed-form estimate and its distance from the traced one
    suggest.py   suggestions, each applied and re-predicted
    measure.py   MemoryHook: measured peaks per phase in a real run -> memory.json
    cli.py       `rlhf-kit memory`

This package never imports rlhf_core: rlhf_kit/cli.py passes in what it needs of the runner.
"""
