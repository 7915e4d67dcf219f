"""Adapters: the kit's run directory from TRL, OpenRLHF and veRL runs.

One small file per framework, each with a guarded import and an explicit KEY_MAP from the
framework's metric names to events.METRICS. Nothing here is imported eagerly: importing
`rlhf_kit.adapters` never pulls in TRL, Ray or torch.

    rlhf_kit.adapters.trl            RLHFKitCallback for transformers/TRL trainers
    rlhf_kit.adapters.openrlhf       TensorBoard import + live launcher (`rlhf-kit openrlhf`)
    rlhf_kit.adapters.openrlhf_hook  the Ray worker_process_setup_hook used by the launcher
    rlhf_kit.adapters.verl           veRL file-logger JSONL import
    rlhf_kit.adapters.cli            `rlhf-kit import {openrlhf,verl} ...`
"""
