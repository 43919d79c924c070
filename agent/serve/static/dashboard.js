/* hyrec dashboard: draws GET /v1/dashboard (agent/serve/dashboard.py) every 10 s.
 * Charts are inline SVG built here; nothing is loaded from elsewhere. */
"use strict";
(function () {
  const api = window.hyrecApi;
  const el = api.el;
  const SVG = "http://www.w3.org/2000/svg";
  const KINDS = ["like", "click", "view", "purchase", "rating", "dislike", "skip"];

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) if (child) node.append(child);
    return node;
  }

  const pct = (x) => (x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0) + "%";
  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
  function secs(s) {
    if (s === null || s === undefined) return "–";
    return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 1 : 0)} s`;
  }
  function when(t, bucket) {
    const d = new Date(t * 1000);
    if (bucket >= 86400) return d.toLocaleDateString("en", { month: "short", day: "numeric" });
    return d.toLocaleTimeString("en", { hour: "2-digit", minute: "2-digit", hour12: false });
  }
  function kindClass(kind) {
    return "k-" + (KINDS.includes(kind) ? kind : "other");
  }

  function pairs(target, rows) {
    target.replaceChildren();
    for (const [label, value, testid] of rows) {
      target.append(el("div", {}, el("dt", { text: label }), el("dd", { testid, text: value })));
    }
  }

  function counts(d) {
    pairs(document.getElementById("counts"), [
      ["items in the catalogue", num(d.catalogue.n_items), "count-items"],
      ["users in the snapshot", num(d.catalogue.n_users), "count-users"],
      ["users with feedback", num(d.catalogue.feedback_users), "count-feedback-users"],
      ["feedback events", num(d.feedback.total), "feedback-total"],
      ["items shown", num(d.online.impressions), "count-impressions"],
    ]);
  }

  function meter(label, value, cls, detail) {
    const bar = svg("svg", { viewBox: "0 0 100 8", preserveAspectRatio: "none", class: "meter" },
      svg("rect", { x: 0, y: 0, width: 100, height: 8, class: "track" }),
      svg("rect", { x: 0, y: 0, width: Math.max(0, Math.min(100, value * 100)), height: 8, class: cls }));
    return el("div", { class: "rate" },
      el("div", { class: "rate-head" }, el("span", { text: label }),
        el("strong", { text: pct(value) })),
      bar, el("p", { class: "muted small", text: detail }));
  }

  function online(d) {
    const o = d.online;
    const hours = Math.round(o.horizon_seconds / 3600);
    const box = document.getElementById("online");
    box.replaceChildren(
      meter("hit rate", o.hit_rate, "hit",
        `${num(o.hits)} of ${num(o.shown)} items shown got a like, click or purchase within ${hours} h`),
      meter("dislike rate", o.dislike_rate, "miss",
        `${num(o.dislikes)} of ${num(o.shown)} items shown were disliked`),
    );
    if (!o.shown) box.append(el("p", { class: "muted small", text: "Nothing shown to a signed-in user yet." }));
  }

  function timeline(d) {
    const tl = d.feedback.timeline;
    const box = document.getElementById("timeline");
    box.replaceChildren();
    if (!tl.buckets.length) {
      box.append(el("p", { class: "empty", text: "No feedback yet: like or dislike a pick in the chat." }));
    } else {
      const W = Math.max(300, Math.round(box.clientWidth) || 720); // 1 unit = 1 px
      const H = 220, L = 40, R = 10, T = 10, B = 26;
      const totals = tl.buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0));
      const max = Math.max(1, ...totals);
      const step = (W - L - R) / tl.buckets.length;
      const y = (n) => H - B - (n / max) * (H - T - B);
      const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
        "aria-label": "feedback events per " + secs(tl.bucket_seconds) + " bucket" });
      for (const tick of new Set([0, Math.ceil(max / 2), max])) {
        chart.append(svg("line", { x1: L, x2: W - R, y1: y(tick), y2: y(tick), class: "grid" }));
        const label = svg("text", { x: L - 6, y: y(tick) + 4, class: "axis end" });
        label.textContent = String(tick);
        chart.append(label);
      }
      tl.buckets.forEach((b, i) => {
        let base = 0;
        for (const kind of tl.kinds) {
          const n = b.counts[kind] || 0;
          if (!n) continue;
          const rect = svg("rect", { x: L + i * step + step * 0.15, y: y(base + n),
            width: Math.max(1, step * 0.7), height: y(base) - y(base + n), class: kindClass(kind) });
          const tip = svg("title");
          tip.textContent = `${when(b.start, tl.bucket_seconds)}: ${n} ${kind}`;
          rect.append(tip);
          chart.append(rect);
          base += n;
        }
      });
      const marks = [...new Set([0, Math.floor((tl.buckets.length - 1) / 2), tl.buckets.length - 1])];
      for (const i of marks) {
        const label = svg("text", { x: L + (i + 0.5) * step, y: H - 8, class: "axis mid" });
        label.textContent = when(tl.buckets[i].start, tl.bucket_seconds);
        chart.append(label);
      }
      box.append(chart);
    }
    const legend = document.getElementById("by-event");
    legend.replaceChildren();
    const kinds = Object.keys(d.feedback.by_event).sort((a, b) => KINDS.indexOf(a) - KINDS.indexOf(b));
    for (const kind of kinds) {
      legend.append(el("div", {},
        el("dt", {}, svg("svg", { viewBox: "0 0 10 10", class: "swatch" },
          svg("rect", { width: 10, height: 10, rx: 2, class: kindClass(kind) })), kind),
        el("dd", { testid: "feedback-count-" + kind, text: num(d.feedback.by_event[kind]) })));
    }
  }

  function model(d) {
    const m = d.model;
    const ds = m.dataset || {};
    const target = document.getElementById("model");
    pairs(target, [
      ["dataset", `${ds.name || "?"} · ${num(ds.n_users)} users · ${num(ds.n_items)} items · ` +
        `${num(ds.n_interactions)} interactions`, "model-dataset"],
      ["fingerprint", ds.sha256 || "–", "model-fingerprint"],
      ["head", m.head || "–", "model-head"],
      ["validation NDCG@10", m["valid_ndcg@10"] === null || m["valid_ndcg@10"] === undefined
        ? "–" : Number(m["valid_ndcg@10"]).toFixed(4), "model-ndcg"],
      ["fitted", m.fitted_at ? new Date(m.fitted_at).toLocaleString("en") +
        (m.fitted_at_source === "file time" ? " (file time)" : "") : "–", "model-fitted"],
      ["text encoder", m.text_model || "–", "model-text"],
    ]);
    const chips = el("dd", { class: "chips", testid: "model-components" },
      ...m.components.map((c) => el("span", { class: "chip static", text: c })));
    target.prepend(el("div", {}, el("dt", { text: "components" }), chips));
  }

  function llm(d) {
    const l = d.llm;
    const box = document.getElementById("llm");
    const state = !l.configured ? "off" : l.reachable ? "up" : "down";
    const label = { off: "no LLM configured", up: "reachable", down: "unreachable" }[state];
    const calls = Object.entries(l.calls || {}).map(([k, n]) => `${n} ${k}`).join(", ") || "none yet";
    box.replaceChildren(
      el("p", { class: "status " + state, testid: "llm-status" }, el("span", { class: "dot" }),
        label, l.model ? el("span", { class: "muted", text: " · " + l.model }) : null),
      el("dl", { class: "facts" },
        el("div", {}, el("dt", { text: "calls" }), el("dd", { text: calls })),
        el("div", {}, el("dt", { text: "latency p50 / p99" }),
          el("dd", { text: `${secs(l.p50)} / ${secs(l.p99)}` }))),
    );
    const rows = [];
    for (const [stage, reasons] of Object.entries(l.fallbacks || {})) {
      for (const [reason, n] of Object.entries(reasons)) {
        rows.push(el("tr", {}, el("td", { text: stage }), el("td", { text: reason }),
          el("td", { class: "n", text: num(n) })));
      }
    }
    box.append(el("h3", { text: "fallbacks since start" }));
    box.append(rows.length
      ? el("table", { class: "table" }, el("thead", {}, el("tr", {}, el("th", { text: "stage" }),
        el("th", { text: "reason" }), el("th", { class: "n", text: "count" }))), el("tbody", {}, ...rows))
      : el("p", { class: "muted small", text: "none" }));
  }

  function requests(d) {
    const entries = Object.entries(d.requests).filter(([name]) => !name.includes("/static"));
    const box = document.getElementById("requests");
    if (!entries.length) {
      box.replaceChildren(el("p", { class: "empty", text: "No requests yet." }));
      return;
    }
    const max = Math.max(1e-3, ...entries.map(([, r]) => r.p99 || 0));
    const rows = entries.map(([name, r]) => {
      const bar = svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", class: "lat" },
        svg("rect", { x: 0, y: 1, width: (100 * (r.p99 || 0)) / max, height: 8, class: "p99" }),
        svg("rect", { x: 0, y: 1, width: (100 * (r.p50 || 0)) / max, height: 8, class: "p50" }));
      return el("tr", {}, el("td", { class: "route", text: name }), el("td", { class: "n", text: num(r.count) }),
        el("td", { class: "n", text: secs(r.p50) }), el("td", { class: "n", text: secs(r.p99) }),
        el("td", { class: "barcell" }, bar));
    });
    box.replaceChildren(el("table", { class: "table" },
      el("thead", {}, el("tr", {}, el("th", { text: "endpoint" }), el("th", { class: "n", text: "requests" }),
        el("th", { class: "n", text: "p50" }), el("th", { class: "n", text: "p99" }), el("th", { text: "" }))),
      el("tbody", {}, ...rows)));
  }

  async function refresh() {
    const updated = document.getElementById("updated");
    try {
      const d = await api.json("GET", "/v1/dashboard");
      counts(d);
      online(d);
      timeline(d);
      model(d);
      llm(d);
      requests(d);
      updated.textContent = "updated " + new Date().toLocaleTimeString("en", { hour12: false });
      document.getElementById("dash").setAttribute("aria-busy", "false");
      document.body.dataset.loaded = "true";
    } catch (e) {
      updated.textContent = "could not load: " + e.message;
    }
  }

  document.getElementById("reload").addEventListener("click", refresh);
  refresh();
  setInterval(() => {
    if (!document.hidden && document.getElementById("auth").hidden) refresh();
  }, 10000);
})();
