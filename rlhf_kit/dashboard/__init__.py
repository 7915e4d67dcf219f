"""The HTML report and the live dashboard: pure functions of run directories.

    rlhf-kit report RUN_DIR [RUN_DIR ...] -o report.html     one offline, self-contained file
    rlhf-kit dashboard [RUNS_DIR] [--port 8050]              live local page, polls for new steps

data.py turns a run directory into JSON-able views, html.py wraps them in one page whose
static/view.js draws the charts with Plotly; report.py and server.py are the two ways out.
Nothing here imports torch or numpy.
"""
