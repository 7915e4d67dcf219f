/* The views of the RLHF Systems Kit report and live dashboard (one renderer for both).
 *
 * Input: the schema (events.METRICS as data) and a list of run views shaped as in
 * rlhf_kit/dashboard/data.py. Charts are drawn by Plotly; this file only arranges data.
 * Text from the run directory is always set with textContent, never as HTML.
 */
(function () {
  "use strict";
  const SEV_COLOR = { info: "#4c78a8", warning: "#e69f00", critical: "#d62728" };
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];
  const SKIP_KEYS = new Set(["step", "epoch"]);
  const MIB = 1024 * 1024;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children || []) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return node;
  }

  function ensure(parent, id, tag, cls) {
    let node = document.getElementById(id);
    if (!node) {
      node = el(tag || "div", { id: id, class: cls || "" });
      parent.appendChild(node);
    }
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toFixed(4));
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function hasData(col) { return Array.isArray(col) && col.some((v) => v !== null && v !== undefined); }

  // ---- metric groups, straight from the METRICS table ---------------------------------
  function groupsWithData(schema, runs) {
    const byName = {};
    for (const m of schema.metrics) byName[m.name] = m;
    const groups = {};
    for (const g of schema.groups) groups[g] = [];
    groups.other = [];
    const seen = new Set();
    for (const run of runs) {
      for (const key of Object.keys(run.steps)) {
        if (SKIP_KEYS.has(key) || seen.has(key) || !hasData(run.steps[key])) continue;
        seen.add(key);
        const m = byName[key] || { name: key, unit: "", group: "other", meaning: "not in the METRICS table (framework extra)", healthy: "" };
        groups[m.group].push(m);
      }
    }
    const order = schema.metrics.map((m) => m.name);
    for (const g of Object.keys(groups)) groups[g].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    return groups;
  }

  function alertsFor(metrics, runs, knownNames) {
    // An alert marks a chart whose metrics appear in its evidence; one whose evidence names
    // no known metric marks every chart, so it is never lost.
    const names = new Set(metrics.map((m) => m.name));
    const out = [];
    for (const run of runs) {
      for (const a of run.alerts || []) {
        const keys = Object.keys(a.evidence || {});
        const known = keys.filter((k) => knownNames.has(k));
        if (known.length === 0 || known.some((k) => names.has(k))) out.push(a);
      }
    }
    return out;
  }

  function alertShapes(alerts) {
    const shapes = [], annotations = [];
    for (const a of alerts) {
      const color = SEV_COLOR[a.severity] || "#888";
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: a.step, x1: a.step, y0: 0, y1: 1,
        line: { color: color, width: 1.5, dash: "dot" } });
      annotations.push({ x: a.step, y: 1, xref: "x", yref: "paper", text: "⚠ " + a.rule, showarrow: false,
        font: { size: 10, color: color }, xanchor: "left", yanchor: "top", textangle: -90 });
    }
    return { shapes: shapes, annotations: annotations };
  }

  function metricTraces(metrics, runs) {
    const traces = [];
    runs.forEach((run, ri) => {
      metrics.forEach((m, mi) => {
        const y = run.steps[m.name];
        if (!hasData(y)) return;
        const many = run.steps.step.length > 300;
        traces.push({
          x: run.steps.step, y: y, type: many ? "scattergl" : "scatter", mode: many ? "lines" : "lines+markers",
          name: runs.length > 1 ? run.name + " · " + m.name : m.name,
          meta: [run.name, m.name],
          line: { color: PALETTE[mi % PALETTE.length], dash: DASHES[ri % DASHES.length] },
          marker: { size: 4 },
          hovertemplate: m.name + " = %{y}" + (m.unit ? " " + m.unit : "") + "<br>step %{x}<extra>" + run.name + "</extra>",
        });
      });
    });
    return traces;
  }

  function legendNote(metrics) {
    return el("ul", { class: "legend" }, metrics.map((m) => el("li", {}, [
      el("code", { text: m.name }), (m.unit ? " [" + m.unit + "] " : " ") + m.meaning + (m.healthy ? " Healthy: " + m.healthy + "." : ""),
    ])));
  }

  function renderMetrics(root, schema, runs) {
    const sec = ensure(root, "rk-metrics", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Metrics by group" }));
    const groups = groupsWithData(schema, runs);
    const known = new Set(schema.metrics.map((m) => m.name));
    for (const [group, metrics] of Object.entries(groups)) {
      if (group === "time" || metrics.length === 0) continue;
      const box = ensure(sec, "group-" + group, "div", "group");
      if (!box.firstChild) box.appendChild(el("h3", { text: group }));
      const chart = ensure(box, "chart-" + group, "div", "chart");
      const notes = ensure(box, "legend-" + group, "div");
      notes.replaceChildren(legendNote(metrics));
      const units = [...new Set(metrics.map((m) => m.unit).filter((u) => u))];
      const marks = alertShapes(alertsFor(metrics, runs, known));
      Plotly.react(chart, metricTraces(metrics, runs), {
        title: { text: group }, height: 320, margin: { t: 40, r: 20, b: 40, l: 60 },
        xaxis: { title: { text: "step" } }, yaxis: { title: { text: units.join(", ") } },
        shapes: marks.shapes, annotations: marks.annotations, legend: { orientation: "h" },
      }, { responsive: true, displaylogo: false });
    }
  }

  // ---- alerts ------------------------------------------------------------------------
  function renderAlerts(root, runs) {
    const sec = ensure(root, "rk-alerts", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Alerts" }));
    const all = [];
    for (const run of runs) for (const a of run.alerts || []) all.push([run, a]);
    const status = ensure(sec, "alert-status", "p");
    status.replaceChildren(...runs.map((r) => el("span", { class: "src", text:
      r.name + ": " + (r.alerts || []).length + " alert(s), " + ({ recorded: "recorded during training",
        offline: "found offline by the stability rules", none: "none found" }[r.alerts_source] || "") + ". " })));
    const chart = ensure(sec, "alert-timeline", "div", "chart small");
    chart.style.display = all.length ? "" : "none";  // an empty timeline says nothing the line above does not
    ensure(sec, "alert-table", "table").style.display = all.length ? "" : "none";
    const y = all.map(([r, a]) => (runs.length > 1 ? r.name + " · " : "") + a.rule);
    Plotly.react(chart, [{
      x: all.map(([, a]) => a.step), y: y, type: "scatter", mode: "markers", name: "alerts",
      marker: { size: 12, symbol: "diamond", color: all.map(([, a]) => SEV_COLOR[a.severity] || "#888") },
      text: all.map(([, a]) => a.severity + ": " + a.message), hovertemplate: "step %{x}<br>%{text}<extra></extra>",
    }], { title: { text: "alert timeline" }, height: 120 + 24 * new Set(y).size, margin: { t: 40, r: 20, b: 40, l: 160 },
      xaxis: { title: { text: "step" } } }, { displaylogo: false });
    const rows = all.map(([r, a]) => el("tr", { class: "alert sev-" + a.severity }, [
      el("td", { text: r.name }), el("td", { text: a.last_step > a.step ? a.step + "–" + a.last_step : String(a.step) }),
      el("td", { class: "sev", text: a.severity }), el("td", {}, [el("b", { text: a.rule })]),
      el("td", { text: a.message }), el("td", { text: a.cause || "" }), el("td", { text: a.what_to_try || "" }),
      el("td", { text: Object.entries(a.evidence || {}).map(([k, v]) => k + "=" + fmt(v)).join(", ") }),
    ]));
    const head = el("tr", {}, ["run", "step", "severity", "rule", "message", "likely cause", "what to try", "evidence"].map((t) => el("th", { text: t })));
    ensure(sec, "alert-table", "table").replaceChildren(head, ...rows);
  }

  // ---- where the time goes -----------------------------------------------------------
  function phaseColumns(schema, run) {
    const cols = [];
    for (const p of schema.phases) if (hasData(run.steps["time/" + p])) cols.push([p, run.steps["time/" + p]]);
    const total = run.steps.step_seconds;
    if (hasData(total)) {
      const other = total.map((t, i) => (t === null ? null : Math.max(0, t - cols.reduce((s, [, c]) => s + (c[i] || 0), 0))));
      cols.push(["other", other]);
    }
    return cols;
  }

  function renderPhases(root, schema, runs) {
    const sec = ensure(root, "rk-phases", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Where the time goes" }));
    runs.forEach((run, ri) => {
      const cols = phaseColumns(schema, run);
      const box = ensure(sec, "phases-" + ri, "div", "group");
      if (!box.firstChild) box.appendChild(el("h3", { text: run.name }));
      if (cols.length === 0) { ensure(box, "phases-none-" + ri, "p").textContent = "No phase timings logged."; return; }
      const row = ensure(box, "phases-row-" + ri, "div", "row");
      const color = (i) => PALETTE[i % PALETTE.length];
      // both boxes exist before either is drawn, so Plotly sizes each to its share of the row
      const bars = ensure(row, "chart-phases-" + ri, "div", "chart wide");
      const pie = ensure(row, "chart-phase-pie-" + ri, "div", "chart narrow");
      Plotly.react(bars, cols.map(([p, c], i) => ({
        x: run.steps.step, y: c, type: "bar", name: p, marker: { color: color(i) },
        hovertemplate: p + " %{y:.4f} s<br>step %{x}<extra></extra>",
      })), { barmode: "stack", title: { text: "seconds per phase, per step" }, height: 320, bargap: 0.05,
        margin: { t: 40, r: 20, b: 40, l: 60 }, xaxis: { title: { text: "step" } }, yaxis: { title: { text: "s" } } },
      { responsive: true, displaylogo: false });
      const sums = cols.map(([, c]) => c.reduce((s, v) => s + (v || 0), 0));
      Plotly.react(pie, [{
        type: "pie", labels: cols.map(([p]) => p), values: sums, sort: false, marker: { colors: cols.map((_, i) => color(i)) },
        hovertemplate: "%{label}: %{value:.3f} s (%{percent})<extra></extra>", textposition: "inside",
      }], { title: { text: "share of the run" }, height: 320, uniformtext: { minsize: 10, mode: "hide" }, margin: { t: 40, r: 10, b: 10, l: 10 } }, { displaylogo: false });
      const rows = (run.breakdown && run.breakdown.rows) || [];
      if (rows.length) {
        const keys = Object.keys(rows[0]);
        ensure(box, "bottleneck-" + ri, "p", "bottleneck").textContent = run.breakdown.bottleneck || "";
        ensure(box, "breakdown-" + ri, "table").replaceChildren(el("tr", {}, keys.map((k) => el("th", { text: k }))),
          ...rows.map((r) => el("tr", {}, keys.map((k) => el("td", { text: fmt(r[k]) })))));
      }
    });
  }

  // ---- multi-rank runs: one phase timeline per rank, for a chosen step ----------------
  function rankTraces(rv, step) {
    const traces = {};
    for (const [s, rank, pi, start, sec] of rv.rows) {
      if (s !== step) continue;
      const name = rv.phases[pi], child = name in rv.parents;
      const t = traces[name] || (traces[name] = { type: "bar", orientation: "h", name: name, x: [], base: [], y: [],
        width: child ? 0.3 : 0.7, marker: { color: PALETTE[pi % PALETTE.length] },
        hovertemplate: name + ": %{x:.4f} s from %{base:.4f} s<extra>%{y}</extra>" });
      t.x.push(sec); t.base.push(start); t.y.push("rank " + rank);
    }
    return Object.values(traces);
  }

  function stragglerText(rv, step) {
    const f = (rv.straggler || {})[String(step)];
    if (!f) return "Step " + step + ": not every rank has written this step yet.";
    return "Step " + step + ": rank " + f.rank + " is the slowest, busy " + fmt(f.busy[String(f.rank)]) +
      " s (" + fmt(f.ratio) + "x the median rank" + (f.phase ? "; " + f.phase + " makes the difference" : "") +
      "). Busy = the rank's phases except comm, where the others wait.";
  }

  function renderRanks(root, runs) {
    const multi = runs.map((r, i) => [r, i]).filter(([r]) => r.ranks && r.ranks.world > 1);
    const old = document.getElementById("rk-ranks");
    if (!multi.length) { if (old) old.remove(); return; }
    const sec = ensure(root, "rk-ranks", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Per rank: phase timeline of one step" }));
    for (const [run, ri] of multi) {
      const rv = run.ranks;
      const box = ensure(sec, "ranks-" + ri, "div", "group");
      if (!box.firstChild) box.appendChild(el("h3", { text: run.name + " (" + rv.world + " ranks)" }));
      const pick = ensure(box, "rank-step-" + ri, "select");
      const chosen = pick.dataset.user ? Number(pick.value) : rv.steps[rv.steps.length - 1];  // follow the newest until the user picks
      pick.replaceChildren(...rv.steps.map((s) => el("option", { value: String(s), text: "step " + s })));
      pick.value = String(rv.steps.includes(chosen) ? chosen : rv.steps[rv.steps.length - 1]);
      const draw = () => {
        const step = Number(pick.value);
        ensure(box, "rank-straggler-" + ri, "p", "bottleneck").textContent = stragglerText(rv, step);
        Plotly.react(ensure(box, "chart-ranks-" + ri, "div", "chart"), rankTraces(rv, step), {
          barmode: "overlay", title: { text: "phases per rank, step " + step }, height: 120 + 40 * rv.world,
          xaxis: { title: { text: "seconds since the rank's first phase of the step" } },
          yaxis: { type: "category", autorange: "reversed" }, margin: { t: 40, r: 20, b: 50, l: 70 } },
        { responsive: true, displaylogo: false });
      };
      pick.onchange = () => { pick.dataset.user = "1"; draw(); };
      draw();
    }
  }

  // ---- where the memory goes ---------------------------------------------------------
  function renderMemory(root, runs) {
    const withMem = runs.map((r, i) => [r, i]).filter(([r]) => r.memory && Object.keys(r.memory).length);
    const sec = ensure(root, "rk-memory", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Where the memory goes" }));
    if (!withMem.length) { ensure(sec, "memory-none", "p").textContent = "No memory.json in this run (the memory instrument, rlhf_kit.memory, writes it during training)."; return; }
    const none = document.getElementById("memory-none"); if (none) none.remove();
    for (const [run, ri] of withMem) {
      const mem = run.memory;
      const box = ensure(sec, "memory-" + ri, "div", "group");
      if (!box.firstChild) box.appendChild(el("h3", { text: run.name + (mem.device ? " (" + mem.device + ")" : "") }));
      const row = ensure(box, "memory-row-" + ri, "div", "row");
      const full = (o) => !!o && Object.keys(o).length > 0;  // the writer leaves {} for what it skipped
      const hasPeak = full(mem.predicted_peak) || full(mem.measured_peak) || full(mem.measured);
      const predDiv = full(mem.predicted) ? ensure(row, "chart-memory-predicted-" + ri, "div", "chart half") : null;
      const peakDiv = hasPeak ? ensure(row, "chart-memory-peak-" + ri, "div", "chart half") : null;
      if (predDiv) {
        const phases = Object.keys(mem.predicted), parts = {};
        for (const ph of phases) for (const [role, cats] of Object.entries(mem.predicted[ph] || {}))
          for (const [cat, b] of Object.entries(cats || {})) (parts[role + " · " + cat] = parts[role + " · " + cat] || {})[ph] = b;
        Plotly.react(predDiv, Object.entries(parts).map(([name, byPhase]) => ({
          type: "bar", name: name, x: phases, y: phases.map((ph) => (byPhase[ph] || 0) / MIB),
          hovertemplate: name + ": %{y:.1f} MiB<extra>%{x}</extra>",
        })), { barmode: "stack", title: { text: "predicted, by model role and category" }, height: 400,
          xaxis: { type: "category" }, yaxis: { title: { text: "MiB" } }, legend: { orientation: "h", y: -0.15 },
          margin: { t: 40, r: 10, b: 40, l: 60 } }, { responsive: true, displaylogo: false });
      }
      if (peakDiv) {
        const traces = [];
        for (const key of ["predicted_peak", "measured_peak"]) if (full(mem[key]))
          traces.push({ type: "bar", name: key.replace("_", " "), x: Object.keys(mem[key]), y: Object.values(mem[key]).map((b) => b / MIB) });
        for (const [ph, cats] of Object.entries(mem.measured || {})) for (const [cat, b] of Object.entries(cats || {}))
          traces.push({ type: "bar", name: "measured " + cat, x: [ph], y: [b / MIB], legendgroup: "measured " + cat });
        Plotly.react(peakDiv, traces, { barmode: "group",
          title: { text: "peak per phase: predicted vs measured" }, height: 400, xaxis: { type: "category" },
          yaxis: { title: { text: "MiB" } }, legend: { orientation: "h", y: -0.15 },
          margin: { t: 40, r: 10, b: 40, l: 60 } }, { responsive: true, displaylogo: false });
      }
      const notes = (mem.notes || []).map((n) => el("li", { text: String(n) }));
      ensure(box, "memory-notes-" + ri, "ul").replaceChildren(...notes);
    }
  }

  // ---- profile artefacts -------------------------------------------------------------
  function renderProfile(root, runs) {
    const sec = ensure(root, "rk-profile", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Profile: flame graphs and traces" }));
    const items = [];
    for (const run of runs) {
      const prof = run.profile || {}, href = prof.href || {}, embed = prof.embed || {};
      for (const f of prof.flamegraphs || []) items.push(el("figure", {}, [
        el("img", { src: embed[f] || href[f] || f, alt: "flame graph " + f, class: "flame" }),
        el("figcaption", {}, [run.name + ": ", el("a", { href: href[f] || f, text: f })])]));
      for (const f of prof.traces || []) items.push(el("p", {}, [run.name + ": trace ", el("a", { href: href[f] || f, text: f }),
        " — open it in ui.perfetto.dev (Open trace file) or chrome://tracing."]));
      for (const f of prof.other || []) items.push(el("p", {}, [run.name + ": ", el("a", { href: href[f] || f, text: f }),
        /speedscope/.test(f) ? " — drop it on www.speedscope.app" : /stacks|\.folded$/.test(f) ? " — folded stacks (flamegraph.pl, inferno)" : ""]));
    }
    if (!items.length) items.push(el("p", { text: "No profile/ files (run `rlhf-kit profile` to record traces and a flame graph)." }));
    ensure(sec, "profile-list", "div").replaceChildren(...items);
  }

  // ---- run config and versions -------------------------------------------------------
  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out); else out[key] = v;
    }
    return out;
  }

  function renderConfig(root, runs) {
    const sec = ensure(root, "rk-config", "section");
    if (!sec.firstChild) sec.appendChild(el("h2", { text: "Run config and versions" }));
    const flat = runs.map((r) => flatten(r.info, "", {}));
    const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))];
    const differs = (k) => new Set(flat.map((f) => JSON.stringify(f[k]))).size > 1;
    const head = el("tr", {}, [el("th", { text: "key" }), ...runs.map((r) => el("th", { text: r.name }))]);
    const rows = keys.map((k) => el("tr", { class: runs.length > 1 && differs(k) ? "differs" : "" },
      [el("td", {}, [el("code", { text: k })]), ...flat.map((f) => el("td", { text: fmt(f[k]) }))]));
    ensure(sec, "config-table", "table").replaceChildren(head, ...rows);
  }

  function renderHeader(root, runs) {
    const bits = runs.map((r) => {
      const n = r.steps.step.length, info = r.info || {};
      return r.name + " — " + (info.framework || "?") + " on " + (info.device || "?") + ", " + n + " step(s)" +
        (n ? " (last " + r.steps.step[n - 1] + ")" : "") + ", " + (r.alerts || []).length + " alert(s)";
    });
    ensure(root, "rk-summary", "p", "summary").replaceChildren(...bits.map((b) => el("div", { text: b })));
  }

  /** Draw (or update in place) every view for `runs` into `root`. */
  function render(root, schema, runs) {
    renderHeader(root, runs);
    renderAlerts(root, runs);
    renderMetrics(root, schema, runs);
    renderPhases(root, schema, runs);
    renderRanks(root, runs);
    renderMemory(root, runs);
    renderProfile(root, runs);
    renderConfig(root, runs);
  }

  window.RK = { render: render, el: el, hasData: hasData };
})();
