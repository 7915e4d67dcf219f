"""The one HTML page behind both the static report and the live dashboard.

The page is a skeleton plus data: `static/view.js` draws every view from the schema and
the run views (data.py); the report inlines Plotly's JS (shipped inside the plotly Python
package) and the data, the live page loads Plotly from the server and polls for data.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path

from rlhf_kit.dashboard.data import finite

STATIC = Path(__file__).parent / "static"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; }
h1 { font-size: 1.4em; margin: .6em 0 .2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 1.4em; }
h3 { margin: .6em 0 0; font-size: 1em; color: #444; }
.summary div, #rk-status { color: #555; font-size: .9em; }
.chart { min-height: 120px; } .row { display: flex; flex-wrap: wrap; gap: 1em; }
.wide { flex: 3 1 500px; } .narrow { flex: 1 1 260px; } .half { flex: 1 1 420px; }
ul.legend { font-size: .8em; color: #555; margin: 0 0 1em; columns: 2; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
tr.sev-critical td.sev { color: #d62728; font-weight: bold; } tr.sev-warning td.sev { color: #b07800; font-weight: bold; }
tr.differs td { background: #fff6d8; } img.flame { max-width: 100%; border: 1px solid #ddd; }
label.run { display: inline-block; margin-right: 1.2em; }
"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """Plotly's minified JS from the installed plotly package (imported only when needed)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def static_text(name: str) -> str:
    """One of our own JS files next to this module."""
    return (STATIC / name).read_text(encoding="utf-8")


def script_json(data: object) -> str:
    """JSON safe inside <script type="application/json">: no `</script>` can end it early."""
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"), default=str)
    except ValueError:  # a NaN/Inf somewhere outside the metric columns
        text = json.dumps(finite(data), allow_nan=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(title: str, schema: dict, runs: list[dict] | None, live: bool) -> str:
    """The whole page.

    Args:
        title: shown in the tab and the heading.
        schema: data.schema().
        runs: run views to embed (report); None in live mode, where the page fetches them.
        live: True for the dashboard server (loads /static/*.js, polls), False for the report.
    Returns:
        HTML text. The report version has no external reference at all: it works offline.
    """
    if live:
        head_js = '<script src="/static/plotly.min.js"></script>'
        tail = ('<script src="/static/view.js"></script>\n<script src="/static/live.js"></script>')
        nav = '<nav id="rk-runs">loading runs…</nav><p id="rk-status"></p>'
        data = ""
    else:
        head_js = f"<script>{plotly_js()}</script>"
        tail = (f"<script>{static_text('view.js')}</script>\n<script>RK.render(document.getElementById('rk-root'), "
                "JSON.parse(document.getElementById('rk-schema').textContent), "
                "JSON.parse(document.getElementById('rk-data').textContent));</script>")
        nav = ""
        data = f'<script type="application/json" id="rk-data">{script_json(runs or [])}</script>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style>
{head_js}
</head><body>
<h1>{html.escape(title)}</h1>
{nav}
<div id="rk-root"></div>
<script type="application/json" id="rk-schema">{script_json(schema)}</script>
{data}
{tail}
</body></html>
"""
