"""Command lines: `rlhf-kit report` and `rlhf-kit dashboard`. Only this module prints."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Sequence

from rlhf_kit.errors import OneLineParser, UsageError


def report_main(argv: Sequence[str] | None = None) -> int:
    """`rlhf-kit report RUN_DIR [RUN_DIR ...] -o report.html`."""
    parser = OneLineParser(prog="rlhf-kit report", description="Write one self-contained HTML report "
                           "(works offline) of one run, or of several overlaid.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<run_id>)")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write (default report.html)")
    parser.add_argument("--no-analyze", action="store_true",
                        help="do not run the stability rules on runs that recorded no alerts")
    args = parser.parse_args(argv)
    from rlhf_kit.dashboard.report import write_report

    out = write_report(args.runs, args.output, analyze=not args.no_analyze)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UsageError(f"--port must be an integer from 0 to 65535, got '{text}'") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be an integer from 0 to 65535, got {port}")
    return port


def dashboard_main(argv: Sequence[str] | None = None) -> int:
    """`rlhf-kit dashboard [RUNS_DIR] [--port 8050] [--host 127.0.0.1]`."""
    parser = OneLineParser(prog="rlhf-kit dashboard", description="Serve a live local dashboard of the runs "
                           "in RUNS_DIR; new steps appear within 2 s.")
    parser.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                        help="directory of run directories, or one run directory (default runs)")
    parser.add_argument("--port", default="8050", help="TCP port (default 8050; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: only this machine can connect)")
    args = parser.parse_args(argv)
    port = _port(args.port)
    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UsageError(f"runs directory '{args.runs_dir}' does not exist (train first, or give the "
                         "directory that holds your runs)")
    from rlhf_kit.dashboard.server import make_server

    try:
        server = make_server(root, host=args.host, port=port)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{port}: {e.strerror or e}") from None
    host, bound = server.server_address[:2]
    print(f"RLHF dashboard for {root.resolve()} at http://{host}:{bound}/  (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: bound beyond this machine; the dashboard has no authentication", file=sys.stderr)
    # Ctrl-C must stop the server even when it was started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
