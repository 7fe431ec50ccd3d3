// The nodes page: every node sharing this server's store (one on the embedded store), the change
// feed's position, and how far each node has applied it.

import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api } from "./api.js";
import { Failure, when } from "./format.js";

export function NodesPage() {
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    const load = () => api("/v1/nodes").then(l => live && (setList(l), setError(null))).catch(e => live && setError(e));
    load();
    const timer = setInterval(load, 5000);
    return () => { live = false; clearInterval(timer); };
  }, []);
  if (!list) return html`<${Failure} error=${error} />${!error && html`<p class="muted">Loading…</p>`}`;
  return html`<h1>Nodes <small class="muted">change feed at ${list.feed}</small></h1><${Failure} error=${error} />
    <div class="scroll"><table class="list">
      <thead><tr><th>Node</th><th>Address</th><th>Version</th><th>Started</th><th>Last heard</th><th>Applied</th><th>Behind on</th></tr></thead>
      <tbody>${list.nodes.map(n => html`<tr data-node=${n.id}>
        <td class="mono">${n.id}${n.this_node ? " (this one)" : ""}</td><td class="mono">${n.address}</td>
        <td>${n.version}</td><td>${when(n.started_at)}</td><td>${when(n.heartbeat_at)}</td>
        <td>${n.applied === list.feed ? "up to date" : `${n.applied} of ${list.feed}`}</td>
        <td class="mono">${Object.keys(n.lagging).join(", ") || "–"}</td></tr>`)}</tbody>
    </table></div>`;
}
