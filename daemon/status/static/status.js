// xai-meter status page: fetches the admin listener's /api/* and draws every chart as SVG.
// No framework, no build step, nothing from elsewhere. Money comes as exact integer ticks
// (1e-10 USD) and is printed from them (BigInt), never from a float.
// State lives in the URL's hash: #since=24h&tz=UTC&refresh=10 (refresh in seconds).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const TICKS_PER_MICRO_USD = 10000n; // 1e10 ticks per USD / 1e6
  const PALETTE = [
    "#4263eb", "#12b886", "#f59f00", "#e64980", "#7950f2",
    "#1098ad", "#fa5252", "#82c91e", "#fd7e14", "#5c7cfa",
    "#20c997", "#be4bdb",
  ];
  const FP_COLORS = ["#4c6ef5", "#15aabf", "#40c057", "#fab005", "#7048e8", "#f76707", "#e64980"];
  const NO_VALUE = "—";
  const colors = new Map(); // model -> colour, stable across refreshes
  const state = { since: "24h", tz: "UTC", refresh: 10, metric: "cost", timer: 0, busy: false };
  let last = null; // the last documents fetched: {summary, calls, fingerprints, health}

  // --- formatting ------------------------------------------------------------------------

  function group3(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // USD from ticks, rounded half-even to `places` decimals, as daemon.units.format_usd does
  // (plus thousands separators): 123456 ticks -> "$0.000012".
  function usd(ticks, places) {
    if (ticks === null || ticks === undefined) return NO_VALUE;
    places = places === undefined ? 6 : places;
    let t = BigInt(ticks);
    const negative = t < 0n;
    if (negative) t = -t;
    const div = 10n ** BigInt(10 - places);
    let q = t / div;
    const r = t % div;
    const half = div / 2n;
    if (r > half || (r === half && q % 2n === 1n)) q += 1n;
    const unit = 10n ** BigInt(places);
    const frac = places ? "." + (q % unit).toString().padStart(places, "0") : "";
    return (negative ? "-$" : "$") + group3((q / unit).toString()) + frac;
  }

  // USD from ticks, exact: every decimal the ticks carry, at least two ("$0.0027996").
  function usdExact(ticks) {
    if (ticks === null || ticks === undefined) return "";
    let t = BigInt(ticks);
    const negative = t < 0n;
    if (negative) t = -t;
    const unit = 10n ** 10n;
    const frac = (t % unit).toString().padStart(10, "0").replace(/0+$/, "").padEnd(2, "0");
    return (negative ? "-$" : "$") + group3((t / unit).toString()) + "." + frac;
  }

  // A short money label for chart axes (floats are fine there: the exact figure is in tables).
  function usdShort(value) {
    if (value === 0) return "$0";
    if (value >= 1000) return "$" + group3(value.toFixed(0));
    if (value >= 1) return "$" + value.toFixed(2);
    if (value >= 0.01) return "$" + value.toFixed(3);
    return "$" + value.toPrecision(2);
  }

  // Money labels for an axis stepping by `step` USD: every label with the same decimals, as
  // many as the step needs and at least two ($0.50, $1.00, $1.50; $0.0025, $0.0050).
  function usdAxis(step) {
    const exact = Number(step.toPrecision(6)).toString();
    const needed = exact.includes("e-") ? Number(exact.split("e-")[1]) + 1
      : (exact.split(".")[1] || "").length;
    const places = step >= 100 ? 0 : Math.min(Math.max(needed, 2), 10);
    return (value) => (value === 0 ? "$0" : "$" + group3(value.toFixed(places).split(".")[0]) +
      (places ? "." + value.toFixed(places).split(".")[1] : ""));
  }

  function int(n) {
    return n === null || n === undefined ? NO_VALUE : group3(String(n));
  }

  // A count in at most 5 characters, as `xai-meter report` prints it: exact below 10,000,
  // else 3 significant digits with k, M, G or T (12.3k, 456k, 2.35M); the exact count is in
  // the cell's tooltip (tokenCell).
  function compact(n) {
    if (n === null || n === undefined) return NO_VALUE;
    if (Math.abs(n) < 10000) return group3(String(Math.round(n * 100) / 100));
    for (const [unit, size] of [["k", 1e3], ["M", 1e6], ["G", 1e9], ["T", 1e12]]) {
      const text = Number((n / size).toPrecision(3));
      if (Math.abs(text) < 1000 || unit === "T") return String(text) + unit;
    }
    return String(n);
  }

  // A share (0..1) as a percentage with one decimal: 0.375 -> "37.5%".
  function percent(share) {
    return share === null || share === undefined ? NO_VALUE : (share * 100).toFixed(1) + "%";
  }

  function ms(value) {
    if (value === null || value === undefined) return NO_VALUE;
    if (value < 1000) return (Math.round(value * 10) / 10) + " ms";
    return (value / 1000).toFixed(value < 10000 ? 2 : 1) + " s";
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return NO_VALUE;
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) {
      return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    }
    return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
  }

  const formatters = new Map();
  function clock(epoch, withDate, withSeconds) {
    const key = state.tz + (withDate ? "+d" : "") + (withSeconds ? "+s" : "");
    let fmt = formatters.get(key);
    if (!fmt) {
      const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
      if (withDate) Object.assign(options, { month: "short", day: "numeric" });
      if (withSeconds) options.second = "2-digit";
      try {
        fmt = new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: state.tz }, options));
      } catch (err) { // a zone the browser does not know: the server's answer still stands
        fmt = new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: "UTC" }, options));
      }
      formatters.set(key, fmt);
    }
    return fmt.format(new Date(epoch * 1000));
  }

  function colorOf(model) {
    if (!colors.has(model)) colors.set(model, PALETTE[colors.size % PALETTE.length]);
    return colors.get(model);
  }

  function fpColor(fingerprint) {
    let h = 0;
    for (const c of String(fingerprint)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return FP_COLORS[h % FP_COLORS.length];
  }

  // --- DOM helpers -----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  // A chart's width in CSS pixels: its SVG is drawn 1:1, so text keeps its size.
  function width(box) {
    return Math.max(Math.round(box.clientWidth || 0), 360);
  }

  // The name a group shows: "-" (no model, no app) and null read as "(none)", as `xai-meter
  // report` prints them.
  function nameOf(value) {
    return value === null || value === undefined || value === "-" ? "(none)" : value;
  }

  function $(id) {
    return document.getElementById(id);
  }

  // A money figure: rounded to the micro-dollar, the exact amount in its tooltip and ticks.
  function money(id, ticks) {
    show(id, usd(ticks), { ticks: ticks });
    $(id).title = "exactly " + usdExact(ticks);
  }

  function costCell(ticks) {
    return el("td", { class: "cost", title: usdExact(ticks) }, usd(ticks));
  }

  // A token count, short (compact), the exact count in its tooltip and data-value.
  function tokenCell(n) {
    const exact = n === null || n === undefined ? null : int(n) + " tokens";
    return el("td", { class: "tokens", title: exact, "data-value": n }, compact(n));
  }

  // Text cut to `px` pixels (at the chart's label font) with "…"; SVG text does not cut.
  let measure = null;
  function fitText(text, px, fontSize) {
    if (!measure) measure = document.createElement("canvas").getContext("2d");
    measure.font = `${fontSize || 12}px ${getComputedStyle(document.documentElement).fontFamily}`;
    const wide = (t) => measure.measureText(t).width;
    if (wide(text) <= px) return text;
    let lo = 0, hi = text.length; // the longest prefix that fits with its "…"
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (wide(text.slice(0, mid) + "…") <= px) lo = mid;
      else hi = mid - 1;
    }
    return text.slice(0, lo) + "…";
  }

  function textWidth(text, fontSize) {
    fitText("", 0, fontSize); // sets up `measure` at that size
    return measure.measureText(text).width;
  }

  // A chart's row label: cut to `px` with "…", the whole name in its tooltip.
  function chartLabel(text, x, y, px) {
    const shown = fitText(text, px, 12);
    return svg("text", { class: "label", x: x, y: y, "data-full": text },
      shown !== text ? svg("title", {}, text) : null, shown);
  }

  function show(id, text, data) {
    const node = $(id);
    node.textContent = text;
    for (const [k, v] of Object.entries(data || {})) node.dataset[k] = String(v);
  }

  function table(id, head, rows, emptyText) {
    const node = $(id);
    const thead = el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.cls }, h.text))));
    const tbody = el("tbody");
    if (!rows.length) {
      tbody.append(el("tr", { class: "empty" }, el("td", { colspan: head.length }, emptyText)));
    }
    for (const row of rows) tbody.append(row);
    node.replaceChildren(thead, tbody);
  }

  // A row's share of the range's total spend: the percentage, over a bar as long as it.
  function shareCell(value, total, color) {
    const share = total > 0 ? Math.max(value, 0) / total : null;
    const bar = el("div", { class: "bar" });
    bar.style.width = (share === null ? 0 : share * 100).toFixed(1) + "%";
    if (color) bar.style.background = color;
    return el("td", { class: "share", "data-share": share === null ? "" : share },
      el("span", { class: "pct" }, percent(share)), el("div", { class: "track" }, bar));
  }

  function swatch(color) {
    const node = el("span", { class: "swatch" });
    node.style.background = color;
    return node;
  }

  // --- the cards -------------------------------------------------------------------------

  function renderCards(s) {
    const t = s.totals;
    money("spend-today", t.today.cost_ticks);
    show("calls-today", int(t.today.calls) + " calls since " + clock(t.today.start, true));
    money("spend-month", t.this_month.cost_ticks);
    show("calls-month", int(t.this_month.calls) + " calls since " + clock(t.this_month.start, true));
    show("window-title", "Range · " + s.window.since);
    money("spend-window", t.window.cost_ticks);
    show("window-label", s.window.label);
    money("burn-hour", s.burn_rate.last_hour_cost_ticks);
    // Both burn rates to the micro-dollar, like every other money figure on the page.
    const perHour = s.burn_rate.window_usd_per_hour;
    const perHourTicks = perHour === null ? null : Math.round(perHour * 1e10);
    show("burn-window", usd(perHourTicks), { usdPerHour: perHour, ticks: perHourTicks });
    $("burn-window").title = perHourTicks === null ? "" : "about " + usdExact(perHourTicks) + " per hour";
    show("calls-window", int(t.window.calls), { value: t.window.calls });
    show(
      "tokens-window",
      compact(t.window.input_tokens) + " tokens in · " + compact(t.window.output_tokens) + " out",
    );
    for (const name of ["unmetered", "unpriced", "errors"]) {
      const n = t.window[name];
      show("count-" + name, int(n), { value: n });
      $("count-" + name).classList.toggle("hot", n > 0);
    }
  }

  // --- spend (calls, tokens) over time: stacked bars per model ----------------------------

  function niceMax(value) {
    if (value <= 0) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
      if (step * magnitude >= value) return step * magnitude;
    }
    return 10 * magnitude;
  }

  function seriesValue(point, metric) {
    if (metric === "calls") return point.calls;
    if (metric === "tokens") return point.input_tokens + point.output_tokens;
    return point.cost_ticks / 1e10;
  }

  function renderSeries(s) {
    const box = $("chart-series");
    const series = s.series;
    const metric = state.metric;
    const W = width(box), H = 260, L = 64, R = 12, T = 12, B = 30;
    const models = s.by_model.map((row) => row.model);
    const shown = (model) => nameOf(model);
    const stacks = Array.from({ length: series.buckets }, () => new Map());
    for (const p of series.points) {
      if (p.bucket < 0 || p.bucket >= series.buckets) continue;
      stacks[p.bucket].set(p.model, seriesValue(p, metric));
      if (!models.includes(p.model)) models.push(p.model);
    }
    const totals = stacks.map((m) => Array.from(m.values()).reduce((a, b) => a + b, 0));
    const highest = Math.max(0, ...totals);
    const top = highest > 0 ? niceMax(highest / 4) * 4 : 1; // four round steps up the axis
    const plotW = W - L - R, plotH = H - T - B;
    const slot = plotW / series.buckets;
    const barW = Math.max(slot * 0.78, 1);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "over time" });
    const label = metric === "cost" ? usdAxis(top / 4) : compact;
    for (let i = 0; i <= 4; i++) {
      const y = T + plotH - (plotH * i) / 4;
      chart.append(
        svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }),
        svg("text", { x: L - 8, y: y + 4, "text-anchor": "end" }, label((top * i) / 4)),
      );
    }
    const every = Math.max(1, Math.ceil(series.buckets / 8));
    const long = series.bucket_s >= 86400 || series.buckets * series.bucket_s > 86400;
    let labelEnd = -Infinity; // where the last x label drawn ends
    for (let b = 0; b < series.buckets; b++) {
      const x = L + b * slot + (slot - barW) / 2;
      let y = T + plotH;
      for (const model of models) {
        const v = stacks[b].get(model);
        if (!v) continue;
        const h = (v / top) * plotH;
        y -= h;
        const start = series.origin + b * series.bucket_s;
        const text = metric === "cost" ? usdShort(v) : int(v);
        chart.append(
          svg(
            "rect",
            { x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2), height: Math.max(h, 0.5).toFixed(2),
              rx: Math.min(2, barW / 4), fill: colorOf(model), "data-model": model, "data-bucket": b },
            svg("title", {}, `${shown(model)} · ${clock(start, long)}: ${text}`),
          ),
        );
      }
      if (b % every === 0) {
        const text = clock(series.origin + b * series.bucket_s, long);
        const w = textWidth(text, 11);
        const lx = Math.min(L + b * slot, W - R - w); // the last one ends at the chart's edge
        if (lx >= labelEnd + 8) {
          chart.append(svg("text", { class: "x-label", x: lx.toFixed(1), y: H - 10 }, text));
          labelEnd = lx + w;
        }
      }
    }
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: T + plotH, y2: T + plotH }));
    if (!series.points.length) {
      chart.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" },
        "no calls in this range yet"));
    }
    box.replaceChildren(chart);
    const legend = $("legend-series");
    legend.replaceChildren(...models.map((m) => el("span", {}, swatch(colorOf(m)), shown(m))));
  }

  // --- per model, app, key tables -------------------------------------------------------

  function renderModels(s) {
    const total = s.total.cost_ticks;
    const rows = s.by_model.map((r) =>
      el("tr", { "data-model": r.model, "data-ticks": r.cost_ticks, "data-calls": r.calls },
        el("td", { class: "name", title: nameOf(r.model) }, swatch(colorOf(r.model)), nameOf(r.model)),
        el("td", {}, int(r.calls)),
        tokenCell(r.input_tokens),
        el("td", { title: "cached share of input" }, percent(r.cached_share)),
        tokenCell(r.output_tokens),
        tokenCell(r.reasoning_tokens),
        costCell(r.cost_ticks),
        shareCell(r.cost_ticks, total, colorOf(r.model)),
      ),
    );
    table("table-model", [
      { text: "model" }, { text: "calls" }, { text: "input" }, { text: "cached" },
      { text: "output" }, { text: "reasoning" }, { text: "cost" }, { text: "share" },
    ], rows, "no calls in this range");
  }

  function groupTable(id, rows, total, nameOf, attrsOf, emptyText) {
    const trs = rows.map((r) =>
      el("tr", Object.assign({ "data-ticks": r.cost_ticks, "data-calls": r.calls }, attrsOf(r)),
        el("td", { class: "name" }, nameOf(r)),
        el("td", {}, int(r.calls)),
        tokenCell(r.input_tokens + r.output_tokens),
        el("td", {}, r.errors ? el("span", { class: "badge bad" }, int(r.errors)) : "0"),
        costCell(r.cost_ticks),
        shareCell(r.cost_ticks, total),
      ),
    );
    table(id, [
      { text: id === "table-key" ? "key" : "app" }, { text: "calls" }, { text: "tokens" },
      { text: "errors" }, { text: "cost" }, { text: "share" },
    ], trs, emptyText);
  }

  // A key by its name and the start of its id ("prod-backend · k_d157ca…"): two keys may
  // share a name. The name is cut first when the column is narrow; the whole id is in the
  // tooltip.
  function keyName(r) {
    const id = r.key_id;
    if (!id) return el("span", { class: "muted" }, "(no key)");
    const short = el("code", { class: "key-id" }, id.length > 9 ? id.slice(0, 8) + "…" : id);
    if (!r.key_name) return el("span", { class: "key muted", title: id + " (unnamed key)" }, short);
    return el("span", { class: "key", title: `${r.key_name} (${id})` },
      el("span", { class: "key-name" }, r.key_name), el("span", { class: "sep" }, "·"), short);
  }

  // --- latency and TTFT per model: p50 to p95 ranges -------------------------------------

  function renderLatency(s) {
    const rows = s.by_model.filter((r) => r.p50_ms !== null || r.ttft_p50_ms !== null);
    const W = width($("chart-latency")), L = 190, R = 170, rowH = 44, T = 8;
    const H = T + Math.max(rows.length, 1) * rowH + 22;
    const longest = Math.max(1, ...rows.flatMap((r) => [r.p95_ms || 0, r.ttft_p95_ms || 0]));
    const top = niceMax(longest / 4) * 4; // four round steps along the axis
    const x = (v) => L + ((W - L - R) * v) / top;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "latency" });
    for (let i = 0; i <= 4; i++) {
      const gx = x((top * i) / 4);
      chart.append(
        svg("line", { class: "grid", x1: gx, x2: gx, y1: T, y2: H - 22 }),
        svg("text", { x: gx, y: H - 6, "text-anchor": "middle" }, ms((top * i) / 4)),
      );
    }
    rows.forEach((r, i) => {
      const y = T + i * rowH;
      chart.append(chartLabel(nameOf(r.model), 0, y + 24, L - 14));
      const lines = [
        ["total", r.p50_ms, r.p95_ms, colorOf(r.model), 14],
        ["TTFT", r.ttft_p50_ms, r.ttft_p95_ms, "#adb5bd", 30],
      ];
      for (const [what, p50, p95, color, dy] of lines) {
        if (p50 === null || p50 === undefined) continue;
        const g = svg("g", { "data-model": r.model, "data-kind": what, "data-p50": p50, "data-p95": p95 },
          svg("title", {}, `${r.model} ${what}: p50 ${ms(p50)}, p95 ${ms(p95)}`),
          svg("line", { x1: x(p50), x2: x(p95), y1: y + dy, y2: y + dy, stroke: color,
            "stroke-width": 4, "stroke-linecap": "round", opacity: 0.55 }),
          svg("circle", { cx: x(p50), cy: y + dy, r: 5, fill: color }),
          svg("circle", { cx: x(p95), cy: y + dy, r: 5, fill: "#fff", stroke: color, "stroke-width": 2 }),
          svg("text", { class: "value", x: W - R + 10, y: y + dy + 4 },
            `${what} ${ms(p50)} · ${ms(p95)}`),
        );
        chart.append(g);
      }
    });
    if (!rows.length) {
      chart.append(svg("text", { class: "empty", x: W / 2, y: 34, "text-anchor": "middle" },
        "no timed calls in this range"));
    }
    $("chart-latency").replaceChildren(chart);
  }

  // --- fingerprint timeline --------------------------------------------------------------

  function renderFingerprints(fp, now) {
    const models = fp.models;
    const W = width($("chart-fingerprints")), L = 190, R = 16, T = 6, rowH = 34;
    const H = T + Math.max(models.length, 1) * rowH + 24;
    // From the first fingerprint seen to the last: the span the ledger knows of.
    let first = Infinity, latest = -Infinity;
    for (const m of models) {
      for (const f of m.seen) {
        first = Math.min(first, f.first_seen);
        latest = Math.max(latest, f.last_seen);
      }
      for (const c of m.changes) {
        first = Math.min(first, c.at);
        latest = Math.max(latest, c.at);
      }
    }
    if (!Number.isFinite(first)) first = latest = now;
    const pad = Math.max((latest - first) * 0.03, 0.5);
    const start = first - pad, end = latest + pad;
    const x = (t) => L + ((W - L - R) * (t - start)) / (end - start);
    const long = end - start > 86400;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "fingerprints" });
    let previous = "";
    for (let i = 0; i <= 5; i++) {
      const t = start + ((end - start) * i) / 5;
      const anchor = i === 0 ? "start" : i === 5 ? "end" : "middle";
      const text = clock(t, long, end - start < 600);
      chart.append(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: T, y2: H - 20 }));
      if (text !== previous) chart.append(svg("text", { x: x(t), y: H - 4, "text-anchor": anchor }, text));
      previous = text;
    }
    models.forEach((m, i) => {
      const y = T + i * rowH;
      chart.append(chartLabel(m.model, 0, y + 20, L - 14));
      for (const f of m.seen) {
        const x1 = x(f.first_seen), x2 = Math.max(x(f.last_seen), x1 + 6);
        chart.append(svg("g", { class: "fp-seg", "data-model": m.model, "data-fingerprint": f.fingerprint },
          svg("title", {}, `${m.model}: ${f.fingerprint}, ${int(f.calls)} calls, ` +
            `${clock(f.first_seen, true)} → ${clock(f.last_seen, true)}`),
          svg("rect", { x: x1, y: y + 8, width: x2 - x1, height: 18, rx: 4,
            fill: fpColor(f.fingerprint), opacity: 0.85 }),
          x2 - x1 > 90 ? svg("text", { x: x1 + 6, y: y + 21 }, f.fingerprint) : null,
        ));
      }
      for (const c of m.changes) {
        const cx = x(c.at);
        chart.append(svg("g", { class: "fp-change", "data-model": m.model, "data-at": c.at, "data-new": c.new },
          svg("title", {}, `${m.model}: ${c.old || "(none)"} → ${c.new} (${c.kind}) at ${clock(c.at, true)}`),
          svg("line", { x1: cx, x2: cx, y1: y + 2, y2: y + rowH - 2 }),
          svg("path", { d: `M${cx} ${y + 9} l7 8 l-7 8 l-7 -8 z` }),
        ));
      }
    });
    if (!models.length) {
      chart.append(svg("text", { class: "empty", x: W / 2, y: 28, "text-anchor": "middle" },
        "no fingerprints seen yet"));
    }
    $("chart-fingerprints").replaceChildren(chart);
    const changes = models.flatMap((m) => m.changes.map((c) => Object.assign({ model: m.model }, c)));
    changes.sort((a, b) => b.at - a.at);
    table("table-fp-changes", [
      { text: "changed at" }, { text: "model", cls: "text" }, { text: "from", cls: "text" },
      { text: "to", cls: "text" }, { text: "kind", cls: "text" },
    ], changes.map((c) => el("tr", { class: "fp-change-row", "data-model": c.model, "data-at": c.at },
      el("td", {}, clock(c.at, true)),
      el("td", { class: "text" }, c.model),
      el("td", { class: "text" }, el("code", {}, c.old || NO_VALUE)),
      el("td", { class: "text" }, el("code", {}, c.new)),
      el("td", { class: "text" }, el("span", { class: c.kind === "new" ? "badge warn" : "badge" }, c.kind)),
    )), "no fingerprint change seen");
  }

  // --- what went wrong, the daemon's health, the last calls ------------------------------

  function renderProblems(s) {
    const lists = [
      ["unmetered, by reason", s.problems.unmetered],
      ["errors, by kind", s.problems.errors],
      ["unpriced, by model", s.problems.unpriced],
    ];
    $("problems").replaceChildren(...lists.map(([title, counts]) => {
      const items = Object.entries(counts).map(([name, n]) =>
        el("li", { "data-name": name, "data-value": n }, el("span", {}, nameOf(name)), el("b", {}, int(n))));
      return el("div", {}, el("h4", {}, title),
        el("ul", {}, items.length ? items : el("li", { class: "none" }, "none")));
    }));
  }

  function renderHealth(h) {
    const pill = $("health-pill");
    pill.textContent = h.status;
    pill.className = "pill " + h.status;
    pill.dataset.status = h.status;
    const dot = (cls) => el("span", { class: "dot " + cls });
    const prices = h.prices;
    let priceText;
    if (prices.last_success !== null) priceText = [dot(prices.age_s > 2 * prices.refresh_interval_s ? "warn" : "ok"), age(prices.age_s) + " ago"];
    else if (prices.refresh) priceText = [dot("warn"), "not fetched yet"];
    else priceText = [dot(""), "off (pricing.refresh = false)"];
    if (prices.failures) priceText.push(el("span", { class: "badge bad" }, prices.failures + " failed"));
    const up = h.upstream;
    const items = [
      ["Ledger", [dot(h.ledger.healthy ? "ok" : "bad"),
        h.ledger.healthy ? "writing" : "cannot write for " + age(h.ledger.failing_for_s),
        el("span", { class: "muted" }, ` · ${int(h.ledger.queue_depth)} queued · ${int(h.ledger.rows_written)} rows written`)]],
      ["Price refresh", priceText],
      ["Upstream errors", [dot(up.errors ? "bad" : "ok"), int(up.errors),
        el("span", { class: "muted" }, ` · ${int(up.http_5xx)} answered 5xx · ${int(up.in_flight)} in flight`)]],
      ["Upstream", el("code", {}, up.url)],
      ["Uptime", age(h.uptime_s)],
      ["Version", h.version],
      ["Ledger file", el("code", {}, h.ledger.path)],
    ];
    $("health").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-item": k }, v)]));
    $("health").dataset.status = h.status;
    show("version", h.version);
  }

  function renderCalls(calls) {
    // The date only on calls of another day than the newest one's (the time says the rest).
    const dayOf = (epoch) => clock(epoch, true).split(",")[0];
    const newest = calls.length ? dayOf(calls[0].started_at) : "";
    const rows = calls.map((c) => {
      let cost = usd(c.cost_ticks);
      if (c.cost_ticks === null) cost = c.cost_source === "unpriced" ? "unpriced" : NO_VALUE;
      const flags = [];
      if (c.error) flags.push(el("span", { class: "badge bad" }, c.error));
      if (c.metered === 0) flags.push(el("span", { class: "badge warn" }, "unmetered: " + (c.unmetered_reason || "?")));
      return el("tr", { class: "call" + (c.error ? " error" : ""), "data-id": c.id,
        "data-ticks": c.cost_ticks === null ? "" : c.cost_ticks },
        el("td", { title: new Date(c.started_at * 1000).toISOString() },
          clock(c.started_at, dayOf(c.started_at) !== newest, true)),
        el("td", { class: "text name model", title: `${nameOf(c.model)} · ${c.endpoint}` },
          c.model || el("span", { class: "muted" }, nameOf(c.model))),
        el("td", { class: "text wide" }, el("code", {}, c.endpoint)),
        el("td", { class: "status" }, c.status === null ? NO_VALUE : c.status, flags),
        tokenCell(c.input_tokens),
        tokenCell(c.output_tokens),
        el("td", { class: "cost", title: usdExact(c.cost_ticks) }, cost),
        el("td", {}, ms(c.duration_ms)),
        el("td", { class: "wide" }, ms(c.ttft_ms)),
        el("td", { class: "text name" }, keyName(c)),
        el("td", { class: "text name", title: nameOf(c.app) },
          c.app || el("span", { class: "muted" }, nameOf(c.app))),
      );
    });
    table("table-calls", [
      { text: "time" }, { text: "model", cls: "text" }, { text: "endpoint", cls: "text wide" },
      { text: "status" }, { text: "input" }, { text: "output" }, { text: "cost" },
      { text: "latency" }, { text: "TTFT", cls: "wide" }, { text: "key", cls: "text" },
      { text: "app", cls: "text" },
    ], rows, "no calls yet");
  }

  // --- fetching and the refresh loop ----------------------------------------------------

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      const err = new Error(body.error || `${path}: HTTP ${response.status}`);
      err.status = response.status;
      throw err;
    }
    return body;
  }

  function render() {
    const { summary, calls, fingerprints, health } = last;
    // Colours follow spend order once, then stay put.
    summary.by_model.forEach((r) => colorOf(r.model));
    renderCards(summary);
    renderSeries(summary);
    renderModels(summary);
    renderLatency(summary);
    const total = summary.total.cost_ticks;
    groupTable("table-app", summary.by_app, total, (r) => el("span", { title: nameOf(r.app) }, nameOf(r.app)),
      (r) => ({ "data-app": r.app }), "no calls in this range");
    groupTable("table-key", summary.by_key, total, keyName,
      (r) => ({ "data-key-id": r.key_id || "", "data-key-name": r.key_name || "" }), "no calls in this range");
    renderFingerprints(fingerprints, summary.now);
    renderProblems(summary);
    renderHealth(health);
    renderCalls(calls.calls);
  }

  async function load() {
    if (state.busy) return;
    state.busy = true;
    clearTimeout(state.timer);
    try {
      const query = `since=${encodeURIComponent(state.since)}&tz=${encodeURIComponent(state.tz)}`;
      let docs;
      try {
        docs = await Promise.all([
          getJSON("api/summary?" + query),
          getJSON("api/calls?limit=50"),
          getJSON("api/fingerprints"),
          getJSON("api/health"),
        ]);
      } catch (err) { // the daemon said no (a bad range: 400) or could not be reached
        if (err.status === 400) {
          show("since-error", err.message);
          $("since-error").hidden = false;
        } else {
          const banner = $("error-banner");
          banner.textContent = "Could not refresh: " + err.message + " (retrying)";
          banner.hidden = false;
          if (document.body.dataset.state !== "ready") document.body.dataset.state = "stale";
        }
        return;
      }
      const [summary, calls, fingerprints, health] = docs;
      last = { summary, calls, fingerprints, health };
      render(); // a bug here is not swallowed: it reaches the error handlers below
      $("since-error").hidden = true;
      $("error-banner").hidden = true;
      const now = new Date();
      show("updated-at", clock(now.getTime() / 1000) + ":" + String(now.getSeconds()).padStart(2, "0"),
        { at: now.getTime() / 1000 });
      document.body.dataset.renders = String(Number(document.body.dataset.renders) + 1);
      document.body.dataset.state = "ready";
    } finally {
      state.busy = false;
      state.timer = setTimeout(load, state.refresh * 1000);
    }
  }

  // --- controls and the URL hash --------------------------------------------------------

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.since = params.get("since") || "24h";
    state.tz = params.get("tz") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const refresh = Number(params.get("refresh"));
    state.refresh = refresh >= 1 ? refresh : 10;
    const select = $("since");
    const known = Array.from(select.options).some((o) => o.value === state.since);
    select.value = known ? state.since : "custom";
    $("since-custom").hidden = known;
    if (!known) $("since-custom").value = state.since;
    $("tz").value = state.tz;
  }

  function writeHash() {
    const params = new URLSearchParams({ since: state.since, tz: state.tz });
    if (state.refresh !== 10) params.set("refresh", String(state.refresh));
    history.replaceState(null, "", "#" + params.toString());
    load();
  }

  function wire() {
    const select = $("since"), custom = $("since-custom"), tz = $("tz");
    select.addEventListener("change", () => {
      if (select.value === "custom") {
        custom.hidden = false;
        custom.focus();
        return;
      }
      custom.hidden = true;
      state.since = select.value;
      writeHash();
    });
    custom.addEventListener("change", () => {
      if (custom.value.trim()) {
        state.since = custom.value.trim();
        writeHash();
      }
    });
    tz.addEventListener("change", () => {
      state.tz = tz.value.trim() || "UTC";
      formatters.clear();
      writeHash();
    });
    $("controls").addEventListener("submit", (event) => event.preventDefault());
    for (const button of $("series-tabs").querySelectorAll("button")) {
      button.addEventListener("click", () => {
        state.metric = button.dataset.metric;
        for (const b of $("series-tabs").querySelectorAll("button")) b.classList.toggle("on", b === button);
        if (last) renderSeries(last.summary);
      });
    }
    const zones = new Set(["UTC", Intl.DateTimeFormat().resolvedOptions().timeZone]);
    $("zones").replaceChildren(...Array.from(zones).filter(Boolean).map((z) => el("option", { value: z })));
    let resizing = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => last && render(), 150);
    });
    window.addEventListener("hashchange", () => {
      readHash();
      formatters.clear();
      load();
    });
  }

  // A bug in this script shows (and the Chromium test reads data-state="error").
  function failed(message) {
    document.body.dataset.state = "error";
    const banner = $("error-banner");
    banner.textContent = "The page hit an error: " + message;
    banner.hidden = false;
  }
  window.addEventListener("error", (event) => failed(event.message));
  window.addEventListener("unhandledrejection", (event) => failed(String(event.reason)));

  readHash();
  wire();
  load();
})();
