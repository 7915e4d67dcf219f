#!/usr/bin/env python
"""Train PPO on a GPT-2 policy: `python train.py --epochs 2 --steps_per_epoch 6 --batch_size 2`.

The same as `rlhf-kit train`; `python train.py --help` lists every flag.
"""

from rlhf_kit.cli import train_main
from rlhf_kit.errors import run_main

if __name__ == "__main__":
    run_main(train_main, prog="train.py")
