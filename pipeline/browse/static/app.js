/* SAE feature browser: a small single-page app over the data files that `pipeline browse` writes
 * (docs/browser.md). Routes live in the URL fragment, so it works from file:// as well as from any static server:
 *   #/                         overview of every store and run, with comparisons
 *   #/run/KEY[/group/G]        a run's feature list (sortable, searchable)
 *   #/run/KEY/feature/J        a feature page
 * Data text reaches the page only through text nodes and textContent, never innerHTML.
 */
"use strict";
(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2459c9", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#5c940d", "#862e9c"];

  // ---- data files: scripts that call BROWSE.put(path, data) -------------------------------------------------
  const cache = new Map();
  const pending = new Map();
  window.BROWSE = {
    put(key, data) {
      cache.set(key, data);
      const p = pending.get(key);
      if (p) {
        pending.delete(key);
        p.resolve(data);
      }
    },
  };

  function load(path) {
    if (cache.has(path)) return Promise.resolve(cache.get(path));
    if (pending.has(path)) return pending.get(path).promise;
    const entry = {};
    entry.promise = new Promise((resolve, reject) => Object.assign(entry, { resolve, reject }));
    pending.set(path, entry);
    const script = document.createElement("script");
    script.src = path;
    const fail = (why) => {
      if (pending.get(path) !== entry) return;
      pending.delete(path);
      script.remove();
      entry.reject(new Error(`${path}: ${why}`));
    };
    script.onerror = () => fail("cannot be loaded (is the site complete?)");
    script.onload = () => fail("holds no data");
    document.head.append(script);
    return entry.promise;
  }

  // ---- small helpers ---------------------------------------------------------------------------------------
  function h(tag, props, ...children) {
    const svg = tag.startsWith("svg:");
    const e = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "style") Object.assign(e.style, v); // CSSOM: inline style attributes are refused by the CSP
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function fmt(x, digits = 3) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    if (Number.isInteger(x)) return x.toLocaleString("en-US");
    const a = Math.abs(x);
    if (a >= 1e5 || a < 1e-3) return x.toExponential(digits - 1);
    return String(Number(x.toPrecision(digits)));
  }
  const decade = (t) => (t >= -3 && t <= 4 ? String(10 ** t) : `1e${t}`);
  const pct = (x) => (x === null || x === undefined ? "–" : `${fmt(100 * x)}%`);
  // Whitespace that would vanish or break the line is shown as a visible mark.
  const shown = (t) => t.replace(/\r?\n/g, "↵").replace(/\t/g, "⇥");
  const pad5 = (n) => String(n).padStart(5, "0");
  const runPath = (run) => `data/runs/${run.key}`;
  const runLink = (run, rest = "") => `#/run/${encodeURIComponent(run.key)}${rest}`;
  const featureLink = (run, f) => runLink(run, `/feature/${f}`);
  let SITE = null;
  const runByKey = (key) => SITE.runs.find((r) => r.key === key);
  const storeOf = (run) => SITE.stores.find((s) => s.key === run.store);
  function groupOf(run, f) {
    for (const g of run.groups) if (f >= g.start && f < g.stop) return g.group;
    return 0;
  }
  function runLabel(run) {
    // The builder names the architecture, its k or lambda and Matryoshka prefix ends (pipeline/report/frontier.py).
    if (run.label) return run.label;
    const s = run.sae;
    if (s.variant === "hier") return `hierarchical K=${s.groups} γ=${s.gamma} λ=${s.l1}`;
    return `${s.variant} λ=${s.l1}`;
  }

  // ---- charts (inline SVG) ---------------------------------------------------------------------------------
  /* Histogram over bins [x0 + i*dx, x0 + (i+1)*dx); several series are drawn as overlaid outlines. */
  function histogram(series, { x0, dx, n, width = 300, height = 110, ticks, tickLabel, xlabel }) {
    const m = { l: 34, r: 8, t: 8, b: xlabel ? 30 : 18 };
    const W = width - m.l - m.r;
    const H = height - m.t - m.b;
    const ymax = Math.max(1, ...series.flatMap((s) => s.counts));
    const X = (x) => m.l + ((x - x0) / (n * dx)) * W;
    const Y = (y) => m.t + H - (y / ymax) * H;
    const svg = h("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    svg.append(h("svg:line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, stroke: "#98a2b3" }));
    for (const t of ticks) {
      svg.append(h("svg:line", { x1: X(t), x2: X(t), y1: m.t + H, y2: m.t + H + 3, stroke: "#98a2b3" }));
      svg.append(h("svg:text", { x: X(t), y: m.t + H + 13, "text-anchor": "middle", text: tickLabel(t) }));
    }
    svg.append(h("svg:text", { x: m.l - 4, y: m.t + 8, "text-anchor": "end", text: fmt(ymax) }));
    svg.append(h("svg:text", { x: m.l - 4, y: m.t + H, "text-anchor": "end", text: "0" }));
    if (xlabel) svg.append(h("svg:text", { x: m.l + W / 2, y: height - 3, "text-anchor": "middle", text: xlabel }));
    for (const s of series) {
      if (series.length === 1) {
        s.counts.forEach((c, i) => {
          if (!c) return;
          const bar = h("svg:rect", { x: X(x0 + (i + s.offset) * dx) + 0.5, y: Y(c),
            width: Math.max(1, (W / n) - 1), height: m.t + H - Y(c), fill: s.color });
          bar.append(h("svg:title", { text: `${s.binLabel(i + s.offset)}: ${fmt(c)}` }));
          svg.append(bar);
        });
      } else {
        let d = `M${X(x0 + s.offset * dx)},${Y(0)}`;
        s.counts.forEach((c, i) => {
          d += ` L${X(x0 + (i + s.offset) * dx)},${Y(c)} L${X(x0 + (i + s.offset + 1) * dx)},${Y(c)}`;
        });
        d += ` L${X(x0 + (s.offset + s.counts.length) * dx)},${Y(0)}`;
        svg.append(h("svg:path", { d, fill: s.color, "fill-opacity": 0.12, stroke: s.color, "stroke-width": 1.5 }));
      }
    }
    return svg;
  }

  function densityChart(series, opts = {}) {
    const b = SITE.density_bins;
    const ticks = [];
    const every = (opts.width || 300) < 300 ? 2 : 1; // decades between labels, so small charts stay legible
    for (let t = 0; t >= b.lo; t -= every) ticks.unshift(t);
    return histogram(series.map((s) => ({ offset: 0, binLabel: (i) => `density 10^${b.lo + i * b.step}…`, ...s })), {
      x0: b.lo, dx: b.step, n: b.n, ticks, tickLabel: (t) => (t === 0 ? "1" : `1e${t}`), ...opts,
    });
  }

  // ---- overview --------------------------------------------------------------------------------------------
  /* A column of SITE.columns (the builder writes them from the evaluation record, docs/eval-schema.json):
   * [label, value of an object holding that field]. */
  const column = ({ key, title, unit }) => [title, (o) => (unit === "fraction" ? pct : fmt)(o?.[key])];

  function metricsTable(runs) {
    // An evaluated run's figures, else the browser's own pass's where it has the same field (L0, feature counts).
    const rows = [
      ["SAE", (r) => runLabel(r)],
      ["latents (groups)", (r) => `${fmt(r.n)} (${r.groups.length})`],
      ...SITE.columns.run.map(column).map(([label, get]) => [label, (r) => get({ ...r.own, ...r.eval })]),
    ];
    const table = h("table", { class: "metrics" },
      h("tr", {}, h("th", { text: "" }), runs.map((r) => h("th", {}, h("a", { href: runLink(r), text: r.name })))),
      rows.map(([label, get]) => h("tr", {}, h("td", { text: label }), runs.map((r) => h("td", { text: get(r) })))));
    const missing = runs.filter((r) => !r.eval).map((r) => r.name);
    return [table, missing.length ? h("p", { class: "note" },
      `Not evaluated: ${missing.join(", ")} (run \`pipeline evaluate\` for MSE, explained variance, KL and CE; `
      + "L0 and feature counts here come from the browser's own pass).") : null];
  }

  function runCard(run, color) {
    const rows = [
      ["features", (g) => `${fmt(g.features)} (#${g.start}–${g.stop - 1})`],
      ...SITE.columns.group.map(column),
    ];
    const groupHead = h("tr", {}, h("th", { text: "group" }),
      run.groups.map((g) => h("th", {}, h("a", { href: runLink(run, `/group/${g.group}`), text: `${g.group} →` }))));
    const hist = h("tr", {}, h("td", { text: "density histogram" }), run.groups.map((g) => h("td", {},
      densityChart([{ counts: g.density_hist, color }], { width: 170, height: 90 }),
      h("div", { class: "note", text: `${g.dead} dead` }))));
    return h("div", { class: "card", id: `run-${run.key}` },
      h("h3", {}, h("a", { href: runLink(run), text: run.name }), h("span", { class: "muted", text: ` · ${runLabel(run)}` })),
      h("div", { style: { overflowX: "auto" } }, h("table", { class: "groups" }, groupHead,
        rows.map(([label, get]) => h("tr", {}, h("td", { text: label }), run.groups.map((g) => h("td", { text: get(g) })))),
        hist)),
      h("p", { class: "note" }, "Activation rate: share of tokens on which some feature of the group fires. "
        + "Feature density: mean share of tokens a feature fires on. Intensity: mean activation when firing. "
        + "Histograms: features by log10 density on the held-out tokens."));
  }

  function comparison(store, runs) {
    const sum = (r) => r.groups.reduce((acc, g) => acc.map((c, i) => c + g.density_hist[i]),
      new Array(SITE.density_bins.n).fill(0));
    const series = runs.map((r, i) => ({ counts: sum(r), color: COLORS[i % COLORS.length] }));
    const perGroup = h("table", { class: "metrics" },
      h("tr", {}, h("th", { text: "feature density by group" }),
        runs.map((r) => h("th", {}, h("a", { href: runLink(r), text: r.name })))),
      Array.from({ length: Math.max(...runs.map((r) => r.groups.length)) }, (_, g) => h("tr", {},
        h("td", { text: `group ${g + 1}` }),
        runs.map((r) => h("td", { text: r.groups[g] ? pct(r.groups[g][SITE.columns.comparison.density]) : "" })))));
    return h("div", { class: "card comparison grow" },
      h("h3", { text: `Comparison: ${runs.length} runs on this store` }),
      h("div", { class: "row" },
        h("div", {}, densityChart(series, { width: 460, height: 180, xlabel: "feature density (log scale)" }),
          h("div", { class: "legend" }, runs.map((r, i) => h("span", {},
            h("span", { class: "swatch", style: { background: COLORS[i % COLORS.length] } }),
            h("a", { href: runLink(r), text: r.name }),
            h("span", { class: "muted", text: ` (${fmt(r.own.live)} live, L0 ${fmt(r.eval?.[SITE.columns.comparison.l0] ?? r.own.l0)})` }))))),
        perGroup),
      h("p", { class: "note", text: "Feature pages link each feature to the feature of the other runs whose decoder "
        + "direction is closest (cosine)." }));
  }

  function overview() {
    const out = [h("h1", { text: "Feature browser" }),
      h("p", { class: "muted", text: `Built ${SITE.generated} · top ${SITE.k} examples per feature · `
        + `${SITE.runs.length} run(s) on ${SITE.stores.length} store(s)` })];
    for (const store of SITE.stores) {
      const runs = store.runs.map(runByKey);
      out.push(h("section", { class: "store" },
        h("h2", { text: store.description }),
        h("p", { class: "muted", text: `held-out rows ${fmt(store.heldout[0])}–${fmt(store.heldout[1])} `
          + `(${fmt(store.heldout[1] - store.heldout[0])} tokens) of ${store.url}` }),
        h("div", { class: "row" },
          h("div", { class: "card" }, h("h3", { text: "Headline metrics" }), metricsTable(runs)),
          runs.length > 1 ? comparison(store, runs) : null),
        runs.map((r, i) => runCard(r, COLORS[i % COLORS.length]))));
    }
    return { title: "Overview", crumbs: [], node: out };
  }

  // ---- feature list ----------------------------------------------------------------------------------------
  const listState = { sort: "id", desc: false, query: "" };
  const SHOW = 500;

  async function featureList(run, group) {
    const data = await load(`${runPath(run)}/features.js`);
    const rows = data.density.map((d, f) => ({
      id: f, group: groupOf(run, f), density: d, max: data.max[f], mean: data.mean[f],
      tokens: data.tokens[f], promoted: data.promoted ? data.promoted[f] : [],
    }));
    const inGroup = rows.filter((r) => !group || r.group === group);
    const columns = [["id", "feature"], ["group", "group"], ["density", "density"], ["max", "max act"],
      ["mean", "mean act"], ["tokens", "top tokens"], ["promoted", "promotes"]];
    const tbody = h("tbody");
    const count = h("span", { class: "muted" });
    const thead = h("tr");
    let limit = SHOW;

    function matches(r, q) {
      if (!q) return true;
      if (/^\d+$/.test(q) && r.id === Number(q)) return true;
      const lq = q.toLowerCase();
      return r.tokens.some((t) => t.toLowerCase().includes(lq)) || r.promoted.some((t) => t.toLowerCase().includes(lq));
    }
    function draw() {
      const q = listState.query.trim();
      const key = listState.sort;
      const found = inGroup.filter((r) => matches(r, q));
      const sign = listState.desc ? -1 : 1;
      if (key !== "tokens" && key !== "promoted") found.sort((a, b) => sign * (a[key] - b[key]) || a.id - b.id);
      count.textContent = `${fmt(found.length)} of ${fmt(inGroup.length)} features`
        + (found.length > limit ? ` (first ${limit} shown)` : "");
      tbody.replaceChildren(...found.slice(0, limit).map((r) => h("tr", {},
        h("td", {}, h("a", { href: featureLink(run, r.id), text: `#${r.id}` })),
        h("td", { text: r.group }),
        h("td", { text: pct(r.density) }),
        h("td", { text: fmt(r.max) }),
        h("td", { text: fmt(r.mean) }),
        h("td", { class: "toks" }, r.tokens.map((t) => h("span", { text: shown(t) }))),
        h("td", { class: "toks" }, r.promoted.map((t) => h("span", { text: shown(t) }))))));
      if (found.length > limit) {
        tbody.append(h("tr", {}, h("td", { colspan: columns.length, class: "l" },
          h("button", { type: "button", onclick: () => { limit = Infinity; draw(); }, text: "show all" }))));
      }
      thead.querySelectorAll("th").forEach((th) => {
        if (th.dataset.key === "tokens" || th.dataset.key === "promoted") return;
        th.className = th.dataset.key === key ? `sorted${listState.desc ? "" : " asc"}` : "";
      });
    }
    for (const [key, label] of columns) {
      const th = h("th", { "data-key": key, class: key === "tokens" || key === "promoted" ? "l" : "" }, label);
      if (key !== "tokens" && key !== "promoted") {
        th.title = "sort";
        th.addEventListener("click", () => {
          listState.desc = listState.sort === key ? !listState.desc : key !== "id";
          listState.sort = key;
          draw();
        });
      } else th.style.cursor = "default";
      thead.append(th);
    }
    const search = h("input", { type: "search", placeholder: "feature id or token…", "aria-label": "search" });
    search.value = listState.query;
    search.addEventListener("input", () => { listState.query = search.value; limit = SHOW; draw(); });
    draw();
    const tabs = h("div", { class: "tabs" },
      h("a", { href: runLink(run), class: group ? "" : "on", text: "all groups" }),
      run.groups.length > 1 ? run.groups.map((g) => h("a", { href: runLink(run, `/group/${g.group}`),
        class: g.group === group ? "on" : "", text: `group ${g.group}` })) : null);
    return {
      title: run.name,
      crumbs: [[run.name, runLink(run)], group ? [`group ${group}`, null] : null],
      node: [h("h1", { text: run.name }), h("p", { class: "muted", text: runLabel(run) }),
        h("div", { class: "controls" }, tabs, search, count),
        h("table", { class: "features" }, h("thead", {}, thead), tbody),
        data.promoted ? null : h("p", { class: "note", text: "No promoted tokens: build with --model or "
          + "--store-model to add the logit lens." })],
      focus: search,
    };
  }

  // ---- feature page ----------------------------------------------------------------------------------------
  function exampleNode(ex, store, fmax, label) {
    const [row, act, before, shade] = ex;
    const c = Math.floor(row / store.rpc);
    const off = row % store.rpc;
    const tokens = cache.get(ctxPath(store, c)).contexts[String(c)];
    const line = h("div", { class: "ctx" });
    const lo = off - before;
    for (let i = 0; i < shade.length; i++) {
      const t = tokens[lo + i] ?? "";
      const level = SITE.levels.indexOf(shade[i]);
      const span = h("span", { class: `tok${i === before ? " hit" : ""}${t === "" ? " empty" : ""}` }, shown(t));
      if (level > 0) span.style.backgroundColor = `rgba(255, 110, 0, ${(level / 63).toFixed(3)})`;
      span.title = i === before ? `activation ${fmt(act, 4)}`
        : level > 0 ? `activation ≈ ${fmt((level / 63) * fmax)}` : "not firing";
      if (t === "") span.title += " (earlier bytes of a character the next token completes)";
      line.append(span);
    }
    return h("div", { class: "example" }, h("span", { class: "act", text: label }), line);
  }
  const ctxPath = (store, c) => `data/stores/${store.key}/ctx/${pad5(Math.floor(c / store.contexts_per_shard))}.js`;

  function activationChart(feat) {
    const b = SITE.bins;
    const [first, counts] = feat.hist;
    const dx = 1 / b.per_decade;
    const x0 = Math.log10(b.lo);
    // At least two decades wide, so that a narrow distribution still gets an axis to read it against.
    const extra = Math.max(2, Math.ceil((2 * b.per_decade - counts.length) / 2));
    const lo = first - extra;
    const hi = first + counts.length + extra;
    const ticks = [];
    for (let t = Math.ceil(x0 + lo * dx); t <= x0 + hi * dx; t++) ticks.push(t);
    return histogram([{ counts, offset: extra, color: "#e8590c",
      binLabel: (i) => `${fmt(b.lo * 10 ** ((lo + i) * dx))}–${fmt(b.lo * 10 ** ((lo + i + 1) * dx))}` }],
    { x0: x0 + lo * dx, dx, n: hi - lo, width: 360, height: 150, ticks, tickLabel: decade,
      xlabel: "activation (log scale), held-out tokens where it fires" });
  }

  function lensTable(title, rows) {
    return h("div", {}, h("h3", { text: title }), h("table", { class: "lens" },
      rows.map(([t, v]) => h("tr", {}, h("td", { class: "t" }, h("span", { text: shown(t) })),
        h("td", { text: fmt(v) })))));
  }

  async function featurePage(run, f) {
    if (!(Number.isInteger(f) && f >= 0 && f < run.n)) throw new Error(`${run.name} has no feature ${f}`);
    const per = SITE.features_per_shard;
    const store = storeOf(run);
    const [list, shard] = await Promise.all([load(`${runPath(run)}/features.js`),
      load(`${runPath(run)}/f/${pad5(Math.floor(f / per))}.js`)]);
    const feat = shard.features[f - shard.first];
    const rows = [...feat.top.map((e) => e[0]), ...feat.samples.map((e) => e[1])];
    await Promise.all([...new Set(rows.map((r) => ctxPath(store, Math.floor(r / store.rpc))))].map(load));
    const fmax = list.max[f];
    const group = groupOf(run, f);
    const nav = h("div", { class: "nav" },
      f > 0 ? h("a", { href: featureLink(run, f - 1), text: `← #${f - 1}` }) : null,
      f < run.n - 1 ? h("a", { href: featureLink(run, f + 1), text: `#${f + 1} →` }) : null,
      h("a", { href: runLink(run, run.groups.length > 1 ? `/group/${group}` : ""), text: "feature list" }));
    const chips = h("div", { class: "chips" },
      h("span", {}, "group ", h("b", { text: group }), ` of ${run.groups.length}`),
      h("span", {}, "density ", h("b", { text: pct(list.density[f]) })),
      h("span", {}, "max activation ", h("b", { text: fmt(fmax) })),
      h("span", {}, "mean when firing ", h("b", { text: fmt(list.mean[f]) })));
    const similar = feat.similar.length ? h("p", {}, "Closest decoder direction in ",
      feat.similar.map(([key, j, cos], i) => {
        const other = runByKey(key);
        return [i ? "; " : "", h("span", { text: `${other.name}: ` }),
          h("a", { href: featureLink(other, j), text: `#${j}` }), h("span", { class: "muted", text: ` (cos ${fmt(cos)})` })];
      })) : null;
    const top = feat.top.length
      ? h("div", { class: "examples" }, feat.top.map((e) => exampleNode(e, store, fmax, fmt(e[1]))))
      : h("p", { class: "muted", text: "This feature never fires on the held-out tokens." });
    const samples = feat.samples.length
      ? h("div", { class: "examples" }, feat.samples.map(([q, ...e]) => exampleNode(e, store, fmax, `q${q} ${fmt(e[1])}`)))
      : h("p", { class: "muted", text: "No examples beyond the top ones." });
    const side = [h("div", { class: "card" }, h("h3", { text: "Activation histogram" }),
      feat.hist[1].length ? activationChart(feat) : h("p", { class: "muted", text: "never fires" }))];
    if (feat.promoted) {
      const lens = store.lens || { promoted: "Promoted tokens (W_U · d)", suppressed: "Suppressed tokens",
        note: `Logit lens through ${store.lens_model}'s unembedding, ignoring the final norm.` };
      side.push(h("div", { class: "card" }, lensTable(lens.promoted, feat.promoted),
        lensTable(lens.suppressed, feat.suppressed), h("p", { class: "note", text: lens.note })));
    }
    return {
      title: `${run.name} #${f}`,
      crumbs: [[run.name, runLink(run)], run.groups.length > 1 ? [`group ${group}`, runLink(run, `/group/${group}`)] : null,
        [`feature ${f}`, null]],
      node: [h("h1", { text: `Feature #${f}` }), h("p", { class: "muted", text: `${run.name} · ${runLabel(run)}` }),
        nav, chips, similar,
        h("div", { class: "row" },
          h("div", { class: "grow" },
            h("div", { class: "card" }, h("h3", { text: feat.top.length ? `Top ${feat.top.length} activations` : "Top activations" }), top),
            h("div", { class: "card" }, h("h3", { text: "Random examples at lower quantiles" }), samples,
              h("p", { class: "note", text: "qX: a random held-out token from the histogram bin holding that quantile "
                + "of the feature's positive activations. Shading is proportional to activation / feature max." }))),
          h("div", { class: "side" }, side))],
    };
  }

  // ---- routing ---------------------------------------------------------------------------------------------
  let current = 0;
  async function route() {
    const mine = ++current;
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    let page;
    try {
      SITE = SITE || await load("data/site.js");
      const run = parts[0] === "run" ? runByKey(parts[1]) : null;
      if (parts[0] === "run" && !run) throw new Error(`there is no run "${parts[1]}" on this site`);
      if (run && parts[2] === "feature") page = await featurePage(run, Number(parts[3]));
      else if (run) page = await featureList(run, parts[2] === "group" ? Number(parts[3]) : 0);
      else page = overview();
    } catch (err) {
      page = { title: "Error", crumbs: [], node: h("p", { class: "error", text: String(err.message || err) }) };
    }
    if (mine !== current) return; // a later navigation won
    document.title = `${page.title} · SAE feature browser`;
    const crumbs = document.getElementById("crumbs");
    crumbs.replaceChildren(...page.crumbs.filter(Boolean).flatMap(([label, href]) => [
      h("span", { class: "sep", text: "›" }), href ? h("a", { href, text: label }) : h("span", { text: label })]));
    document.getElementById("main").replaceChildren(...[page.node].flat(Infinity).filter(Boolean));
    window.scrollTo(0, 0);
    if (page.focus) page.focus.focus();
    document.body.dataset.ready = parts.join("/") || "overview";
  }
  window.addEventListener("hashchange", route);
  route();
})();
