"""`make check`: the imports, the versions found, and a one-step dry run on the embedded tiny model."""

from __future__ import annotations

import importlib
import sys
import tempfile
import time

PACKAGES = ("torch", "transformers", "tokenizers", "vaderSentiment", "tensorboard", "tqdm", "plotly", "numpy")


def main() -> int:
    print(f"python       {sys.version.split()[0]}")
    missing = []
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            print(f"{name:<12} {getattr(mod, '__version__', 'installed')}")
        except ImportError:
            missing.append(name)
            print(f"{name:<12} MISSING")
    if missing:
        print(f"check failed: missing {', '.join(missing)}; run `make install`", file=sys.stderr)
        return 1
    import torch

    print(f"cuda         {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available (CPU run)'}")
    from rlhf_core.config import parse_config
    from rlhf_core.train import train

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        cfg = parse_config(["--epochs", "1", "--steps_per_epoch", "1", "--batch_size", "2", "--max_new_tokens", "4",
                            "--output_dir", out, "--progress", "false", "--tensorboard", "false"])
        train(cfg)
    print(f"\ncheck passed: one PPO step ran in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
