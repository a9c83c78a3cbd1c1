// edge-ad live page: polls GET v1/results and GET readyz, fetches the latest overlay when a new part is scored.
// Plain JavaScript, no framework, no CDN. Everything from a record is shown with textContent (never as HTML):
// a record's name comes from the client that sent the image.
"use strict";

(function () {
  const RESULTS_MS = 300; // a new result shows within a second of its POST
  const READY_MS = 2000;
  const HISTORY = 300; // records in the chart and in the NG rate
  const RATE_WINDOW_MS = 60000;

  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const $ = (id) => document.getElementById(id);

  let threshold = null;
  let clockOffsetMs = 0; // server clock (HTTP Date header) minus this browser's clock
  let overlayFor = null;
  let overlayUrl = null;
  let overlayBusy = false;
  let lastDrawn = "";

  async function get(path) {
    const response = await fetch(path, { headers: headers, cache: "no-store" });
    const served = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(served)) clockOffsetMs = served + 500 - Date.now(); // Date has 1 s resolution
    return response;
  }

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function isNg(record) {
    return record.verdict !== undefined && record.verdict !== "good";
  }

  function fmt(x, digits) {
    return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "-";
  }

  // ------------------------------------------------------------------ results
  async function pollResults() {
    try {
      const response = await get("v1/results?limit=" + HISTORY);
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
      if (typeof body.threshold === "number") threshold = body.threshold;
      if (body.model_sha256) setText("model", "model " + String(body.model_sha256).slice(0, 12));
      render(Array.isArray(body.results) ? body.results : []);
      setText("conn", "");
    } catch (err) {
      setText("conn", "results unavailable: " + err.message);
    } finally {
      window.setTimeout(pollResults, RESULTS_MS);
    }
  }

  function render(records) {
    const scored = records.filter((r) => typeof r.image_score === "number");
    const newest = records.length ? records[records.length - 1] : null;
    renderLatest(newest);
    renderStats(records, scored);
    const key = scored.length + ":" + (scored.length ? scored[scored.length - 1].id : "") + ":" + threshold;
    if (key !== lastDrawn) {
      lastDrawn = key;
      drawChart(scored);
    }
    renderRecent(records);
    const latestScored = scored.length ? scored[scored.length - 1] : null;
    if (latestScored && latestScored.id !== overlayFor) loadOverlay(latestScored.id);
  }

  function renderLatest(record) {
    const card = $("latest");
    if (!record || card.dataset.recordId === record.id) return;
    const verdict = $("verdict");
    if (record.error) {
      verdict.className = "verdict error";
      verdict.textContent = "ERROR: " + record.error;
    } else {
      verdict.className = "verdict " + (isNg(record) ? "ng" : "good");
      verdict.textContent = isNg(record) ? "NG" : "GOOD";
    }
    setText("score", fmt(record.image_score, 4));
    setText("threshold", fmt(typeof record.threshold === "number" ? record.threshold : threshold, 4));
    setText("source", String(record.source || "-"));
    setText("name", String(record.name || "-"));
    setText("time", String(record.time || "-"));
    setText("latency", typeof record.latency_ms === "number" ? record.latency_ms.toFixed(1) + " ms" : "-");
    card.dataset.recordId = record.id; // set last: tests and screens read it as "this record is shown"
  }

  async function loadOverlay(id) {
    if (overlayBusy) return;
    overlayBusy = true;
    try {
      const response = await get("v1/latest/overlay.png");
      if (!response.ok) return; // a newer poll tries again
      const blob = await response.blob();
      if (overlayUrl) URL.revokeObjectURL(overlayUrl);
      overlayUrl = URL.createObjectURL(blob);
      const img = $("overlay");
      img.src = overlayUrl;
      img.hidden = false;
      const shown = response.headers.get("X-Record-Id") || id;
      img.dataset.recordId = shown;
      $("overlay-empty").hidden = true;
      overlayFor = shown; // the record actually drawn: an older one is fetched again on the next poll
    } catch (err) {
      setText("conn", "overlay unavailable: " + err.message);
    } finally {
      overlayBusy = false;
    }
  }

  function renderStats(records, scored) {
    const now = Date.now() + clockOffsetMs;
    const recent = scored.filter((r) => now - Date.parse(r.time) <= RATE_WINDOW_MS).length;
    setText("throughput", (recent / (RATE_WINDOW_MS / 1000)).toFixed(2) + " img/s");
    const ng = scored.filter(isNg).length;
    setText("window", String(scored.length));
    setText("ngrate", scored.length ? ((100 * ng) / scored.length).toFixed(1) + " %" : "-");
    setText("counts", scored.length + " / " + (records.length - scored.length));
  }

  function renderRecent(records) {
    const body = $("recent").tBodies[0];
    const rows = records.slice(-12).reverse();
    const key = rows.map((r) => r.id).join(",");
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    body.replaceChildren(
      ...rows.map((r) => {
        const tr = document.createElement("tr");
        const verdict = r.error ? "error" : isNg(r) ? "NG" : "good";
        const cells = [r.time, r.source, r.name, fmt(r.image_score, 4), r.error ? "error: " + r.error : verdict];
        cells.forEach((text, i) => {
          const td = document.createElement("td");
          td.textContent = String(text === undefined ? "-" : text);
          if (i === 4) td.className = r.error ? "error" : isNg(r) ? "ng" : "good";
          tr.appendChild(td);
        });
        return tr;
      })
    );
  }

  // ------------------------------------------------------------------ chart (canvas, own code)
  function drawChart(scored) {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 240;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    canvas.dataset.points = String(scored.length);
    const pad = { left: 56, right: 12, top: 10, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const values = scored.map((r) => r.image_score);
    if (threshold !== null) values.push(threshold);
    if (!values.length) {
      ctx.fillStyle = "#8b949e";
      ctx.fillText("no scores yet", pad.left, pad.top + 20);
      return;
    }
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (hi - lo < 1e-9) {
      lo -= 1;
      hi += 1;
    }
    const margin = 0.08 * (hi - lo);
    lo -= margin;
    hi += margin;
    const y = (v) => pad.top + plotH * (1 - (v - lo) / (hi - lo));
    const x = (i) => pad.left + (scored.length > 1 ? (plotW * i) / (HISTORY - 1) : 0);

    ctx.strokeStyle = "#2d333b";
    ctx.fillStyle = "#8b949e";
    ctx.font = "11px ui-monospace, monospace";
    ctx.lineWidth = 1;
    for (let k = 0; k <= 4; k++) {
      const v = lo + ((hi - lo) * k) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.left, y(v));
      ctx.lineTo(width - pad.right, y(v));
      ctx.stroke();
      ctx.fillText(v.toPrecision(3), 4, y(v) + 4);
    }
    ctx.fillText("last " + HISTORY + " scored parts, oldest left", pad.left, height - 6);
    if (threshold !== null) {
      ctx.save();
      ctx.strokeStyle = "#d29922";
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(pad.left, y(threshold));
      ctx.lineTo(width - pad.right, y(threshold));
      ctx.stroke();
      ctx.restore();
    }
    ctx.strokeStyle = "#58a6ff";
    ctx.lineWidth = 1.2;
    ctx.beginPath();
    scored.forEach((r, i) => (i ? ctx.lineTo(x(i), y(r.image_score)) : ctx.moveTo(x(i), y(r.image_score))));
    ctx.stroke();
    scored.forEach((r, i) => {
      ctx.fillStyle = isNg(r) ? "#e5534b" : "#2ea043";
      ctx.beginPath();
      ctx.arc(x(i), y(r.image_score), isNg(r) ? 3.5 : 2.5, 0, 2 * Math.PI);
      ctx.fill();
    });
  }

  // ------------------------------------------------------------------ readiness and sources
  async function pollReady() {
    try {
      const response = await get("readyz");
      const body = await response.json();
      const pill = $("ready");
      pill.className = "pill " + (body.ready ? "ready" : "not-ready");
      pill.textContent = body.ready ? "ready" : "not ready";
      pill.title = (body.not_ready || []).join("; ") || "GET /readyz";
      renderSources(body);
    } catch (err) {
      const pill = $("ready");
      pill.className = "pill unknown";
      pill.textContent = "no answer";
      pill.title = String(err.message);
    } finally {
      window.setTimeout(pollReady, READY_MS);
    }
  }

  function renderSources(body) {
    const items = [];
    if (body.http) items.push({ name: "http", up: true, detail: "POST /v1/predict" });
    const sources = body.sources || {};
    Object.keys(sources).forEach((name) => {
      items.push({ name: name, up: Boolean(sources[name].up), detail: String(sources[name].detail || "") });
    });
    if (typeof body.queue_depth === "number") items.push({ name: "queue", up: true, detail: body.queue_depth + " waiting" });
    const list = $("sources");
    list.replaceChildren(
      ...items.map((item) => {
        const li = document.createElement("li");
        li.className = item.up ? "up" : "down";
        li.textContent = item.name + (item.detail ? ": " + item.detail : "");
        return li;
      })
    );
  }

  window.addEventListener("resize", () => {
    lastDrawn = "";
  });
  pollResults();
  pollReady();
})();
