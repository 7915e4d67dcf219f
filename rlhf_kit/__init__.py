"""RLHF Systems Kit instruments: profiler, stability monitor, dashboard, memory optimizer, adapters.

The read side (events, runlog, stability, dashboard) imports no torch.
"""

__version__ = "0.1.0"
