// One execution: its outcome, timings, resource use, output and log lines; a dead or expired one can be
// retried.

import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api } from "./api.js";
import { Failure, Status, ms, when } from "./format.js";

export function ExecutionPage({ name, id }) {
  const [e, setExecution] = useState(null);
  const [error, setError] = useState(null);
  const [loads, setLoads] = useState(0);
  useEffect(() => { api("/v1/executions/" + encodeURIComponent(id)).then(setExecution).catch(setError); }, [id, loads]);
  const retry = () => api(`/v1/executions/${encodeURIComponent(id)}/retry`, { method: "POST" })
    .then(() => setLoads(n => n + 1)).catch(setError);
  const back = html`<p><a href=${"#/f/" + encodeURIComponent(name)}>← ${name}</a></p>`;
  if (!e) return html`${back}<${Failure} error=${error} />`;
  const usage = e.usage || {};
  const logs = e.logs || [];
  return html`${back}
    <h1>Execution <span class="mono">${e.id}</span></h1>
    <${Failure} error=${error} />
    <p><${Status} status=${e.status} /> ${e.trigger} · v${e.version} · attempt ${e.attempts} of ${e.max_attempts}
      ${(e.status === "dead" || e.status === "expired") && html` <button type="button" onClick=${retry}>Retry</button>`}</p>
    <dl class="facts">
      <dt>Queued</dt><dd>${when(e.queued_at)}</dd><dt>Started</dt><dd>${when(e.started_at)}</dd>
      <dt>Finished</dt><dd>${when(e.finished_at)}</dd><dt>Duration</dt><dd>${ms(e.duration_ms)}</dd>
      <dt>HTTP status</dt><dd>${e.http_status ?? "–"}</dd><dt>Exit code</dt><dd>${e.exit_code ?? "–"}</dd>
      <dt>CPU</dt><dd>${usage.cpu_ms !== undefined ? ms(usage.cpu_ms) : "–"}</dd>
      <dt>Peak memory</dt><dd>${usage.peak_memory_bytes !== undefined ? `${(usage.peak_memory_bytes / 1048576).toFixed(1)} MiB` : "–"}</dd>
      <dt>Error</dt><dd class="mono">${e.error || "–"}</dd>
    </dl>
    ${e.output !== null && e.output !== undefined && html`<h2>Output${e.output_truncated ? " (cut off)" : ""}</h2><pre>${e.output}</pre>`}
    <h2>Log</h2>
    <pre class="log">${logs.length ? logs.map(l => html`<div class=${"line " + l.level}>${l.line}</div>`) : "(no lines)"}</pre>`;
}
