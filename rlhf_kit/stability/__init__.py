"""Stability monitor: pure rules over windows of step records -> Alerts with likely causes.

Standard library only, so any run directory (ours, TRL, OpenRLHF) can be checked anywhere.

    thresholds  Thresholds: every rule threshold, documented and configurable
    rules       the rule functions, their causes and advice, and `evaluate(history)`
    monitor     StabilityMonitor (a Hook), merge_alerts, analyze_steps, analyze_run
    report      text_report(run): metrics summary, alerts with causes, phase breakdown
    cli         `rlhf-kit health RUN_DIR`
"""

from rlhf_kit.stability.monitor import StabilityMonitor, analyze_run, analyze_steps, merge_alerts
from rlhf_kit.stability.report import summarize_metrics, text_report
from rlhf_kit.stability.rules import ADVICE, RULES, evaluate
from rlhf_kit.stability.thresholds import Thresholds

__all__ = ["ADVICE", "RULES", "StabilityMonitor", "Thresholds", "analyze_run", "analyze_steps",
           "evaluate", "merge_alerts", "summarize_metrics", "text_report"]
