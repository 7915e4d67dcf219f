"""Docs that are generated must match their source; commands the README shows must exist."""

import re

from conftest import ROOT
from rlhf_kit.cli import COMMANDS
from rlhf_kit.events import METRICS, SEED_KEYS, metrics_markdown


def test_metrics_doc_is_generated_from_the_table():
    assert (ROOT / "docs" / "metrics.md").read_text().strip() == metrics_markdown().strip(), \
        "docs/metrics.md is stale: run `make docs`"


def test_every_metric_is_declared_once_with_unit_group_and_meaning():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert all(m.group and m.meaning for m in METRICS)
    assert set(SEED_KEYS) - {"timestamp", "step", "epoch"} <= set(names)


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"^\s*make ([\w-]+)", readme, re.M)):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"README shows `make {target}`, Makefile lacks it"
    for cmd in set(re.findall(r"rlhf-kit ([a-z][a-z-]*)", readme)):
        assert cmd in COMMANDS, f"README shows `rlhf-kit {cmd}`, which does not exist"
