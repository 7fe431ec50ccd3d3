// The functions page: every function with its kind, live version, routes and limits, and its last
// hour's traffic — sortable by any column, filtered by name.

import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api } from "./api.js";
import { Failure, ms, pct } from "./format.js";

const COLUMNS = [
  ["name", "Name"], ["kind", "Kind"], ["live", "Live"], ["routes", "Routes"], ["memory", "Memory"],
  ["timeout", "Timeout"], ["invocations", "Calls (1 h)"], ["error_rate", "Errors"], ["p50", "p50"], ["p99", "p99"],
];

function rowsOf(functions, traffic) {
  const byName = new Map(traffic.map(t => [t.function, t]));
  return functions.map(f => {
    const t = byName.get(f.name) || {};
    return {
      name: f.name, kind: f.kind, live: f.live_version, routes: (f.config.routes || []).join(" "),
      memory: f.limits.memory_mb, timeout: f.limits.timeout_ms, invocations: t.invocations || 0,
      error_rate: t.error_rate || 0, p50: t.p50_ms ?? null, p99: t.p99_ms ?? null,
    };
  });
}

export function FunctionsPage() {
  const [rows, setRows] = useState(null);
  const [error, setError] = useState(null);
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState({ key: "name", dir: 1 });
  useEffect(() => {
    let live = true;
    const load = () => Promise.all([api("/v1/functions"), api("/v1/stats?since=1h")])
      .then(([list, traffic]) => live && (setRows(rowsOf(list.functions, traffic.functions)), setError(null)))
      .catch(e => live && setError(e));
    load();
    const timer = setInterval(load, 10000);
    return () => { live = false; clearInterval(timer); };
  }, []);
  if (!rows) return html`<${Failure} error=${error} />${!error && html`<p class="muted">Loading…</p>`}`;
  const shown = rows
    .filter(r => r.name.includes(filter.trim()))
    .sort((a, b) => {
      const x = a[sort.key], y = b[sort.key];
      return (x === y ? 0 : x === null ? 1 : y === null ? -1 : x < y ? -1 : 1) * sort.dir;
    });
  const by = key => setSort(s => ({ key, dir: s.key === key ? -s.dir : 1 }));
  return html`
    <h1>Functions <small class="muted">${rows.length}</small></h1>
    <${Failure} error=${error} />
    <label class="filter">Filter by name <input type="search" value=${filter} onInput=${e => setFilter(e.target.value)} /></label>
    <div class="scroll"><table class="list">
      <thead><tr>${COLUMNS.map(([key, label]) => html`
        <th aria-sort=${sort.key === key ? (sort.dir > 0 ? "ascending" : "descending") : "none"}>
          <button type="button" onClick=${() => by(key)}>${label}${sort.key === key ? (sort.dir > 0 ? " ▲" : " ▼") : ""}</button>
        </th>`)}</tr></thead>
      <tbody>${shown.map(r => html`<tr data-function=${r.name}>
        <td><a href=${"#/f/" + encodeURIComponent(r.name)}>${r.name}</a></td>
        <td>${r.kind}</td><td>v${r.live}</td><td class="mono">${r.routes || "–"}</td>
        <td>${r.memory} MiB</td><td>${ms(r.timeout)}</td><td class="num calls">${r.invocations}</td>
        <td class=${"num errors" + (r.error_rate > 0 ? " bad" : "")}>${pct(r.error_rate)}</td>
        <td class="num">${ms(r.p50)}</td><td class="num">${ms(r.p99)}</td>
      </tr>`)}</tbody>
    </table></div>
    ${shown.length === 0 && html`<p class="muted">${rows.length ? "No function matches." : "Nothing deployed yet: wafer deploy FILE --name NAME."}</p>`}`;
}
