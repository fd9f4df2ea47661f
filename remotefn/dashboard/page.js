"use strict";
// Draws the page's data (REMOTEFN.data) into the tables and Bokeh's plots; on the live
// dashboard, asks for fresh data every REMOTEFN.poll milliseconds.
(function () {
  let streamVersion = -1;
  let autoEnd = null;

  function model(name) {
    const docs = window.Bokeh && window.Bokeh.documents;
    return docs && docs.length ? docs[0].get_model_by_name(name) : null;
  }

  function seconds(value) {
    return value === null || value === undefined ? "-" : value.toFixed(value < 10 ? 3 : 1);
  }

  function bytes(value) {
    if (value === null || value === undefined) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return value.toFixed(unit ? 1 : 0) + " " + units[unit];
  }

  function table(id, header, rows) {
    const element = document.getElementById(id);
    element.replaceChildren();
    const head = element.insertRow();
    for (const name of header) {
      const th = document.createElement("th");
      th.textContent = name;
      head.appendChild(th);
    }
    for (const row of rows) {
      const tr = element.insertRow();
      row.forEach(function (text, i) {
        const td = tr.insertCell();
        td.textContent = text;
        if (i < 3) td.className = "text";
      });
    }
  }

  function drawTables(data) {
    const s = data.summary;
    let text = s.calls + " calls ran on " + s.workers.length + " workers in " +
      seconds(s.wall) + " s";
    if (s.aggregated) {
      text += "; the task stream shows each worker's calls in buckets of " +
        seconds(s.bucket) + " s (opacity: how busy it was)";
    }
    if (data.cores) {
      text += "; cores: " + data.cores.in_use + " of " + data.cores.total + " in use";
    }
    const summary = document.getElementById("summary");
    summary.textContent = text;
    table("workers", ["worker", "host", "pool", "state", "calls", "failed", "busy (s)",
      "busy (%)", "CPU (s)", "peak memory"],
    s.workers.map(function (w) {
      return [w.worker, w.host, w.pool, w.state, w.calls, w.failed, seconds(w.busy),
        (100 * w.utilisation).toFixed(0), seconds(w.cpu), bytes(w.peak_memory)];
    }));
    const running = data.running || [];
    document.getElementById("running-section").hidden = !REMOTEFN.live;
    table("running", ["call", "worker", "host", "running for (s)"], running.map(function (r) {
      return [r.call, r.worker, r.host, seconds(r.elapsed)];
    }));
    const errors = document.getElementById("errors");
    errors.replaceChildren();
    if (!s.errors.length) errors.textContent = "none";
    for (const e of s.errors) {
      const details = document.createElement("details");
      const title = document.createElement("summary");
      const who = e.function ? e.function + " (call " + e.call + ")" : "";
      title.textContent = "at " + seconds(e.time) + " s: " + who + " on " + e.worker + ": " +
        e.message;
      details.appendChild(title);
      if (e.traceback) {
        const pre = document.createElement("pre");
        pre.textContent = e.traceback;
        details.appendChild(pre);
      }
      errors.appendChild(details);
    }
  }

  function factors(name, values, empty) {
    const range = model(name);
    const wanted = values.length ? values : [empty];
    if (range && JSON.stringify(range.factors) !== JSON.stringify(wanted)) {
      range.factors = wanted;
    }
  }

  function drawPlots(data) {
    if (data.stream) {
      const tasks = model("tasks");
      if (tasks) {
        tasks.data = data.stream;
        factors("workers", Array.from(new Set(data.stream.worker)).sort(), "(no worker yet)");
        const time = model("time");
        const end = Math.max(1, ...data.stream.end) * 1.02;
        if (time && (autoEnd === null || time.end === autoEnd) && time.start === 0) {
          time.end = end;
          autoEnd = end;
        }
      }
    }
    const functions = data.summary.functions;
    const progress = model("progress_data");
    if (progress) {
      const columns = {function: functions.map(function (f) { return f.function; })};
      for (const state of ["finished", "cached", "failed", "running", "queued"]) {
        columns[state] = functions.map(function (f) { return f[state]; });
      }
      factors("functions", columns.function, "(no call yet)");
      progress.data = columns;
    }
    const nodes = model("nodes_data");
    if (nodes && data.nodes) {
      factors("hosts", data.nodes.map(function (n) { return n.host; }), "(no worker yet)");
      nodes.data = {host: data.nodes.map(function (n) { return n.host; }),
        in_use: data.nodes.map(function (n) { return n.in_use; }),
        workers: data.nodes.map(function (n) { return n.workers; })};
    }
  }

  function poll() {
    const query = new URLSearchParams(window.location.search);
    query.set("stream", String(streamVersion));
    fetch("data?" + query.toString(), {cache: "no-store"})
      .then(function (response) {
        if (!response.ok) throw new Error("the session answered " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (data.stream) streamVersion = data.stream_version;
        drawTables(data);
        drawPlots(data);
        setTimeout(poll, REMOTEFN.poll);
      })
      .catch(function () {
        const summary = document.getElementById("summary");
        summary.textContent = "The session has ended (or cannot be reached).";
        summary.className = "ended";
      });
  }

  drawTables(REMOTEFN.data);
  if (REMOTEFN.live) poll();
})();
