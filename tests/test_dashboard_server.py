"""The live server over real run directories: incremental updates, path safety, robustness."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import warnings

import pytest
from test_dashboard_helpers import make_run, metrics_at, write_step

from rlhf_kit.dashboard.server import make_server


@pytest.fixture
def serve(tmp_path):
    """Start a dashboard over tmp_path/runs on a free port; yields a GET helper."""
    runs = tmp_path / "runs"
    runs.mkdir()
    server = make_server(runs, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]

    def get(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)  # sent as written: http.client does not normalise `..`
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, body

    yield runs, get
    server.shutdown()
    server.server_close()


def get_json(get, path):
    status, body = get(path)
    assert status == 200, (path, status, body[:200])
    return json.loads(body)


def test_binds_localhost_by_default(tmp_path):
    server = make_server(tmp_path, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_page_and_scripts_served(serve):
    _, get = serve
    status, page = get("/")
    assert status == 200 and b'src="/static/live.js"' in page and b'id="rk-schema"' in page
    for js in ("/static/plotly.min.js", "/static/view.js", "/static/live.js"):
        assert get(js)[0] == 200


def test_incremental_update_sends_only_new_steps(serve):
    runs, get = serve
    rd, bus, hook = make_run(runs, "live", steps=3, alert_at=1, close=False)
    assert [r["name"] for r in get_json(get, "/api/runs")] == ["live"]
    first = get_json(get, "/api/run/live?since=0&gen=")
    assert first["reset"] and first["steps"]["step"] == [0, 1, 2]
    assert first["steps"]["reward_mean"] == [metrics_at(s)["reward_mean"] for s in range(3)]
    assert [a["rule"] for a in first["alerts"]] == ["kl_spike"]
    gen = first["gen"]
    assert get_json(get, f"/api/run/live?since=3&gen={gen}")["steps"]["step"] == []
    write_step(bus, 3)
    write_step(bus, 4)
    upd = get_json(get, f"/api/run/live?since=3&gen={gen}")
    assert not upd["reset"] and upd["steps"]["step"] == [3, 4]
    assert upd["steps"]["kl_mean"] == [metrics_at(3)["kl_mean"], metrics_at(4)["kl_mean"]]
    bus.run_end()


def test_torn_last_line_waits_for_the_rest(serve):
    runs, get = serve
    rd, _, _ = make_run(runs, "torn", steps=2, alert_at=None)
    gen = get_json(get, "/api/run/torn?since=0")["gen"]
    line = json.dumps({"step": 2, "reward_mean": 0.2}) + "\n"
    with open(rd.train_log, "a") as f:
        f.write(line[:9])  # half a line: the writer is mid-write
        f.flush()
        assert get_json(get, f"/api/run/torn?since=2&gen={gen}")["steps"]["step"] == []
        f.write(line[9:])
    assert get_json(get, f"/api/run/torn?since=2&gen={gen}")["steps"]["reward_mean"] == [0.2]
    # a line that never parses is skipped with a warning, and later lines still arrive
    with open(rd.train_log, "a") as f:
        f.write('{"step": 3, "rew\n' + json.dumps({"step": 4, "reward_mean": 0.4}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_json(get, f"/api/run/torn?since=3&gen={gen}")["steps"]["step"] == [4]


def test_run_deleted_while_open(serve):
    runs, get = serve
    rd, _, _ = make_run(runs, "doomed", steps=2)
    get_json(get, "/api/run/doomed?since=0")
    shutil.rmtree(rd.root)
    assert get("/api/run/doomed?since=2")[0] == 404
    assert get_json(get, "/api/runs") == []
    assert get("/files/doomed/profile/flame.svg")[0] == 404
    # and a run written again under the same name starts a new generation
    make_run(runs, "doomed", steps=1, alert_at=None)
    again = get_json(get, "/api/run/doomed?since=2&gen=old")
    assert again["reset"] and again["steps"]["step"] == [0]


def test_serves_only_files_inside_runs_dir(serve, tmp_path):
    runs, get = serve
    rd, _, _ = make_run(runs, "r1", steps=1)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    os.symlink(secret, rd.profile / "link_out.txt")
    os.symlink(tmp_path, rd.profile / "dir_out")
    status, body = get("/files/r1/profile/flame.svg")
    assert status == 200 and body.startswith(b"<svg")
    for bad in ["/files/../secret.txt", "/files/r1/../../secret.txt", "/files/%2e%2e/secret.txt",
                "/files/r1/%2E%2E/%2E%2E/secret.txt", "/files/" + str(secret), "/files//" + str(secret),
                "/files/%2F" + str(secret).lstrip("/"), "/files/r1/profile/link_out.txt",
                "/files/r1/profile/dir_out/secret.txt", "/files/r1/..%5C..%5Csecret.txt",
                "/files/r1/profile", "/files/", "/api/run/..", "/api/run/%2e%2e", "/nope"]:
        status, body = get(bad)
        assert status == 404, bad
        assert b"do not serve" not in body


def test_live_offline_alerts_for_runs_without_a_monitor(serve):
    """No alerts.jsonl lines: the server judges each new step with the stability rules."""
    from rlhf_kit.hooks import HookBus
    from rlhf_kit.runlog import RunDir, RunLogHook

    runs, get = serve
    bus = HookBus([RunLogHook(RunDir(runs / "quiet"))])
    for step in range(3):
        write_step(bus, step)
    first = get_json(get, "/api/run/quiet?since=0")
    assert first["alerts"] == [] and first["alerts_source"] == "none"
    bus.begin_step(3)
    bus.end_step(3, 0, {**metrics_at(3), "nan_count": 2, "update_skipped": 1})
    upd = get_json(get, f"/api/run/quiet?since=3&gen={first['gen']}")
    assert upd["alerts_source"] == "offline"
    assert [(a["step"], a["severity"]) for a in upd["alerts"] if a["step"] == 3] == [(3, "critical")]
    bus.run_end()


def test_dashboard_cli_serves_and_stops_on_ctrl_c(tmp_path):
    import re
    import signal
    import subprocess
    import sys

    make_run(tmp_path, "cli_run", steps=2, alert_at=None)
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_kit.cli", "dashboard", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=10)
        conn.request("GET", "/api/runs")
        assert [r["name"] for r in json.loads(conn.getresponse().read())] == ["cli_run"]
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
