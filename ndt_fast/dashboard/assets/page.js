// The dashboard page: one panel per run, each polling the server (ndt_fast/dashboard/server.py)
// for its status and its current view. In a report (`ndt-fast report`) the same page reads a
// snapshot embedded as window.NDT_EMBEDDED instead, and nothing is fetched.
"use strict";

const EMBEDDED = window.NDT_EMBEDDED || null;
const POLL_MS = 1500;
const COLORS = { metric: "steelblue", loss: "coral", grad: "#7a5195", weight: "#2a9d8f" };
const RULE_STYLE = {
  default: { color: "red", symbol: "circle" },
  ndt: { color: "#555", symbol: "x" },
};

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const source = EMBEDDED
  ? {
      runs: async () => EMBEDDED.runs,
      status: async (i) => EMBEDDED.status[i],
      view: async (i, layer, metric) => {
        const view = (EMBEDDED.views[i][layer] || {})[metric];
        if (!view) throw new Error(`this report holds no ${metric} of ${layer}`);
        return view;
      },
    }
  : {
      runs: () => getJSON("api/runs"),
      status: (i) => getJSON(`api/runs/${i}/status`),
      view: (i, layer, metric, range, buckets) => {
        const params = new URLSearchParams({ layer, metric, buckets: String(buckets) });
        if (range) {
          params.set("x0", String(range[0]));
          params.set("x1", String(range[1]));
        }
        return getJSON(`api/runs/${i}/view?${params}`);
      },
    };

const state = { metric: null, rules: {}, panels: [] };

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function label(name) {
  return name.replace(/_/g, " ");
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  if (seconds < 90) return `${seconds.toFixed(0)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function renderStatus(panel, status) {
  const node = panel.nodes.status;
  node.replaceChildren();
  const counts = Object.values(status.samples);
  const samples = counts.length ? Math.max(...counts) : 0;
  const rate = status.samples_per_s === null ? "?" : status.samples_per_s.toFixed(status.samples_per_s < 10 ? 2 : 0);
  const parts = [
    EMBEDDED ? `snapshot of ${EMBEDDED.created} · ` : "",
    `last step ${status.last_step === null ? "–" : status.last_step} · `,
    `${samples.toLocaleString()} samples/layer · `,
    `${rate} samples/s (${status.rate_basis}) · writer: `,
  ];
  node.append(parts.join(""));
  node.append(element("span", { class: status.writer.state, title: status.writer.why }, status.writer.state));
  node.append(` (${status.writer.why}) · file changed ${formatAge(status.modified_s_ago)} ago`);
}

function jumpTraces(view) {
  const traces = [];
  const notes = [];
  for (const [rule, jumps] of Object.entries(view.jumps)) {
    const shown = jumps.x.length < jumps.total ? ` (${jumps.x.length} largest |z| shown)` : "";
    notes.push(`${rule}: ${jumps.total}${shown}`);
    if (!state.rules[rule] || jumps.x.length === 0) continue;
    const style = RULE_STYLE[rule] || { color: "black", symbol: "diamond" };
    traces.push({
      x: jumps.x, y: jumps.y, customdata: jumps.z, type: "scatter", mode: "markers",
      name: `jumps (${rule} rule)`, marker: { color: style.color, symbol: style.symbol, size: 9 },
      hovertemplate: `${rule} rule<br>step %{x}<br>z %{customdata:.2f}<extra></extra>`,
    });
  }
  return { traces, note: `jumps in view — ${notes.join(", ")}` };
}

function alertTraces(view) {
  // Monitoring alerts (alerts=) for this layer: red crosses on the curve, the message on hover.
  const alerts = view.alerts;
  if (!alerts || alerts.total === 0) return { traces: [], note: "" };
  const shown = alerts.x.length < alerts.total ? ` (latest ${alerts.x.length} shown)` : "";
  return {
    traces: [{
      x: alerts.x, y: alerts.y, text: alerts.text, type: "scatter", mode: "markers", name: "alerts",
      marker: { color: "crimson", symbol: "x-thin-open", size: 14, line: { width: 3, color: "crimson" } },
      hovertemplate: "step %{x}<br>%{text}<extra>alert</extra>",
    }],
    note: `; alerts in view: ${alerts.total}${shown}`,
  };
}

function renderView(panel, view) {
  const metric = view.metric;
  const traces = [{
    x: view.metric_trace.x, y: view.metric_trace.y, type: "scatter", mode: "lines", name: label(metric),
    line: { color: COLORS.metric, width: 2 }, yaxis: "y",
  }];
  const layout = {
    uirevision: `${view.layer}|${metric}`,
    margin: { l: 60, r: 20, t: 30, b: 45 },
    legend: { orientation: "h", y: 1.12 },
    xaxis: { title: { text: "training step" }, domain: [0, 0.86] },
    yaxis: { title: { text: label(metric) } },
    hovermode: "x",
  };
  if (view.loss) {
    traces.push({ x: view.loss.x, y: view.loss.y, type: "scatter", mode: "lines", name: "loss", yaxis: "y2",
                  line: { color: COLORS.loss, width: 1, dash: "dot" } });
    layout.yaxis2 = { title: { text: "loss" }, overlaying: "y", side: "right", anchor: "x", showgrid: false };
  }
  if (view.grad_norm) {
    traces.push({ x: view.grad_norm.x, y: view.grad_norm.y, type: "scatter", mode: "lines", name: "grad norm",
                  yaxis: "y3", line: { color: COLORS.grad, width: 1, dash: "dash" } });
    layout.yaxis3 = { title: { text: "grad norm" }, overlaying: "y", side: "right", anchor: "free", position: 0.96,
                      showgrid: false };
  }
  const jumps = jumpTraces(view);
  const alerts = alertTraces(view);
  traces.push(...jumps.traces, ...alerts.traces);
  panel.nodes.jumps.textContent = `${view.rows.toLocaleString()} samples in view; ${jumps.note}${alerts.note}`;
  panel.rendering = true;
  Plotly.react(panel.nodes.plot, traces, layout, { responsive: true, displaylogo: false })
    .finally(() => { panel.rendering = false; });

  if (view.weight) {
    panel.nodes.weights.style.display = "";
    panel.nodes.weightNote.textContent = "";
    Plotly.react(panel.nodes.weights, [
      { x: view.metric_trace.x, y: view.metric_trace.y, type: "scatter", mode: "lines", name: "activations",
        line: { color: COLORS.metric } },
      { x: view.weight.x, y: view.weight.y, type: "scatter", mode: "lines", name: "weights", yaxis: "y2",
        line: { color: COLORS.weight } },
    ], {
      uirevision: `${view.layer}|${metric}`, title: { text: `${label(metric)}: activation vs weight space` },
      margin: { l: 60, r: 60, t: 40, b: 40 }, legend: { orientation: "h", y: -0.2 },
      xaxis: { title: { text: "training step" } }, yaxis: { title: { text: "activations" } },
      yaxis2: { title: { text: "weights" }, overlaying: "y", side: "right", showgrid: false },
    }, { responsive: true, displaylogo: false });
  } else {
    panel.nodes.weights.style.display = "none";
    panel.nodes.weightNote.textContent =
      `weight space: ${label(metric)} of the weights not tracked (FastTracker(track_weights=...))`;
  }
}

async function refresh(panel) {
  try {
    const [status, view] = await Promise.all([
      source.status(panel.index),
      source.view(panel.index, panel.layer, state.metric, panel.range, Math.round(panel.nodes.plot.clientWidth || 800)),
    ]);
    renderStatus(panel, status);
    renderView(panel, view);
    panel.nodes.error.textContent = "";
  } catch (error) {
    panel.nodes.error.textContent = String(error.message || error);
  }
}

function metadataSummary(metadata) {
  const model = metadata.model || {};
  const tracker = metadata.tracker || {};
  const versions = metadata.versions || {};
  const parts = [];
  if (model.class) {
    parts.push(typeof model.parameters === "number"
      ? `${model.class}, ${model.parameters.toLocaleString()} parameters` : model.class);
  }
  if (tracker.sampling_frequency) parts.push(`sampled every ${tracker.sampling_frequency} step(s)`);
  if (tracker.jump_rule) parts.push(`jump rule ${tracker.jump_rule}`);
  const names = Object.entries(versions).map(([name, version]) => `${name} ${version}`);
  if (names.length) parts.push(names.join(", "));
  if (metadata.start_time) parts.push(`started ${metadata.start_time}`);
  return parts.join(" · ");
}

function buildPanel(summary, index) {
  const root = element("section", { class: "run", id: `run-${index}` });
  root.append(element("h2", {}, summary.name));
  const nodes = {
    status: element("div", { class: "status", id: `status-${index}` }, "reading…"),
    error: element("div", { class: "error", id: `error-${index}` }),
    layer: element("select", { id: `layer-${index}` }),
    plot: element("div", { class: "plot", id: `plot-${index}` }),
    jumps: element("div", { class: "note", id: `jumps-${index}` }),
    weights: element("div", { class: "weights", id: `weights-${index}` }),
    weightNote: element("div", { class: "note" }),
  };
  for (const layer of summary.layers) nodes.layer.append(element("option", { value: layer }, layer));
  const layerLabel = element("label", {}, "layer ");
  layerLabel.append(nodes.layer);
  const details = element("details", { id: `metadata-${index}` });
  details.append(element("summary", {}, `run metadata — ${metadataSummary(summary.metadata)}`));
  details.append(element("pre", {}, JSON.stringify(summary.metadata, null, 1)));
  root.append(nodes.status, nodes.error, layerLabel, nodes.plot, nodes.jumps, nodes.weights, nodes.weightNote, details);
  const panel = { index, summary, layer: summary.layers[0], range: null, nodes, rendering: false };
  nodes.layer.addEventListener("change", () => {
    panel.layer = nodes.layer.value;
    panel.range = null;
    refresh(panel);
  });
  return { root, panel };
}

function watchZoom(panel) {
  if (EMBEDDED) return; // a report holds one downsampled snapshot: Plotly zooms into it locally
  panel.nodes.plot.on("plotly_relayout", (event) => {
    if (panel.rendering) return;
    // A drag-zoom reports "xaxis.range[0]" and "[1]"; Plotly.relayout(..., {"xaxis.range": [a, b]}) the pair.
    if (event["xaxis.range[0]"] !== undefined) panel.range = [event["xaxis.range[0]"], event["xaxis.range[1]"]];
    else if (event["xaxis.range"]) panel.range = event["xaxis.range"].slice(0, 2);
    else if (event["xaxis.autorange"]) panel.range = null;
    else return;
    refresh(panel);
  });
}

async function main() {
  const summaries = await source.runs();
  const metrics = [];
  const rules = [];
  for (const summary of summaries) {
    for (const metric of summary.metrics) if (!metrics.includes(metric)) metrics.push(metric);
    for (const rule of summary.rules) if (!rules.includes(rule)) rules.push(rule);
  }
  const metricSelect = document.getElementById("metric");
  for (const metric of metrics) metricSelect.append(element("option", { value: metric }, label(metric)));
  state.metric = metrics[0];
  const ruleBox = document.getElementById("rules");
  ruleBox.append("jumps: ");
  for (const rule of rules) {
    state.rules[rule] = true;
    const box = element("input", { type: "checkbox", id: `rule-${rule}`, checked: "" });
    box.addEventListener("change", () => { state.rules[rule] = box.checked; state.panels.forEach(refresh); });
    const wrap = element("label", {}, ` ${rule} rule `);
    wrap.prepend(box);
    ruleBox.append(wrap);
  }
  metricSelect.addEventListener("change", () => {
    state.metric = metricSelect.value;
    for (const panel of state.panels) panel.range = null;
    state.panels.forEach(refresh);
  });
  document.getElementById("mode").textContent = EMBEDDED
    ? `report written ${EMBEDDED.created}`
    : `live: polling every ${POLL_MS / 1000} s`;
  const container = document.getElementById("runs");
  summaries.forEach((summary, index) => {
    const { root, panel } = buildPanel(summary, index);
    container.append(root);
    state.panels.push(panel);
  });
  await Promise.all(state.panels.map(refresh));
  state.panels.forEach(watchZoom);
  if (!EMBEDDED) {
    const poll = async () => {
      await Promise.all(state.panels.map(refresh));
      setTimeout(poll, POLL_MS);
    };
    setTimeout(poll, POLL_MS);
  }
}

main().catch((error) => {
  document.getElementById("runs").textContent = `cannot load the runs: ${error.message || error}`;
});
