/* Live mode of the dashboard: list the runs, poll each shown run's JSON endpoint for the
 * steps it has not seen yet, merge them and redraw in place (no page reload).
 * Endpoints (rlhf_kit/dashboard/server.py):
 *   GET /api/runs                         -> [{name, framework, steps, mtime}]
 *   GET /api/run/NAME?since=N&gen=G       -> {exists, gen, reset, steps: new columns, alerts, ...}
 */
(function () {
  "use strict";
  const POLL_MS = 1000;          // well inside the 2 s promise for a new step to appear
  const LIST_MS = 5000;
  const schema = JSON.parse(document.getElementById("rk-schema").textContent);
  const root = document.getElementById("rk-root");
  const state = {};              // run name -> run view, columns grown in place
  let shown = new URLSearchParams(location.search).getAll("run");

  function appendColumns(cols, add) {
    const n = cols.step.length, m = add.step.length;
    for (const key of Object.keys(add)) if (!(key in cols)) cols[key] = new Array(n).fill(null);
    for (const key of Object.keys(cols)) {
      const src = add[key];
      for (let i = 0; i < m; i++) cols[key].push(src ? src[i] : null);
    }
  }

  async function pollRun(name) {
    const cur = state[name];
    const since = cur ? cur.steps.step.length : 0;
    const gen = cur ? cur.gen : "";
    const resp = await fetch("/api/run/" + encodeURIComponent(name) + "?since=" + since + "&gen=" + encodeURIComponent(gen),
      { cache: "no-store" });
    if (resp.status === 404) {  // run directory deleted: keep what is shown, say so once
      if (!cur || cur.gone) return false;
      cur.gone = true;
      return true;
    }
    const upd = await resp.json();
    if (!cur || upd.reset) { state[name] = Object.assign(upd, { gone: false }); return true; }
    const changed = upd.steps.step.length > 0 || upd.alerts.length !== cur.alerts.length ||
      JSON.stringify(upd.memory) !== JSON.stringify(cur.memory) || cur.gone ||
      JSON.stringify(upd.profile) !== JSON.stringify(cur.profile) ||
      ((upd.ranks && upd.ranks.rows) || []).length !== ((cur.ranks && cur.ranks.rows) || []).length;
    appendColumns(cur.steps, upd.steps);
    Object.assign(cur, { alerts: upd.alerts, alerts_source: upd.alerts_source, info: upd.info, memory: upd.memory,
      profile: upd.profile, breakdown: upd.breakdown, ranks: upd.ranks, gone: false });
    return changed;
  }

  function status(text) { document.getElementById("rk-status").textContent = text; }

  async function tick() {
    let changed = false;
    try {
      for (const name of shown) changed = (await pollRun(name)) || changed;
      const runs = shown.filter((n) => state[n]).map((n) => state[n]);
      const gone = runs.filter((r) => r.gone).map((r) => r.name);
      if (changed && runs.length) RK.render(root, schema, runs);
      status((gone.length ? "run directory no longer exists: " + gone.join(", ") + ". " : "") +
        "updated " + new Date().toLocaleTimeString() + ", " + runs.map((r) => r.name + ": " + r.steps.step.length + " steps").join(", "));
    } catch (e) {
      status("update failed (" + e + "), retrying");
    }
    setTimeout(tick, POLL_MS);
  }

  async function listRuns() {
    try {
      const runs = await (await fetch("/api/runs", { cache: "no-store" })).json();
      if (!shown.length && runs.length) shown = [runs[0].name];
      const nav = document.getElementById("rk-runs");
      nav.replaceChildren(...runs.map((r) => {
        const box = RK.el("input", { type: "checkbox", "data-run": r.name });
        box.checked = shown.includes(r.name);
        box.addEventListener("change", () => {
          shown = box.checked ? shown.concat([r.name]) : shown.filter((n) => n !== r.name);
          const q = new URLSearchParams(); shown.forEach((n) => q.append("run", n));
          history.replaceState(null, "", "?" + q.toString());
          root.replaceChildren(); // views are rebuilt for the new set of runs
          for (const n of shown) if (state[n]) state[n].gen = "";  // refetch whole runs
        });
        return RK.el("label", { class: "run" }, [box, " " + r.name + " (" + r.framework + (r.steps === "?" ? "" : ", " + r.steps + " steps") + ")"]);
      }));
      if (!runs.length) nav.textContent = "No run directories here yet; this list refreshes every few seconds.";
    } catch (e) { /* the server may be restarting: try again later */ }
    setTimeout(listRuns, LIST_MS);
  }

  listRuns().then(tick);
})();
