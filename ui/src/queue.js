// The queue page: how many executions wait and run, how long the oldest has waited, what waits to be
// retried, and the dead letters (dead or expired lately), each of which can be retried, or every one of
// a function's redriven.

import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api } from "./api.js";
import { Failure, Status, ms, when } from "./format.js";

function Table({ executions, empty, retry }) {
  if (!executions.length) return html`<p class="muted">${empty}</p>`;
  return html`<div class="scroll"><table class="list">
    <thead><tr><th>Function</th><th>Execution</th><th>Status</th><th>Attempts</th><th>Queued</th><th>Error</th>${retry && html`<th></th>`}</tr></thead>
    <tbody>${executions.map(e => html`<tr data-execution=${e.id}>
      <td><a href=${"#/f/" + encodeURIComponent(e.function)}>${e.function}</a></td>
      <td><a class="mono" href=${`#/f/${encodeURIComponent(e.function)}/e/${e.id}`}>${e.id.slice(0, 13)}…</a></td>
      <td><${Status} status=${e.status} /></td><td>${e.attempts} of ${e.max_attempts}</td>
      <td>${when(e.queued_at)}</td><td class="mono clip" title=${e.error || ""}>${e.error || "–"}</td>
      ${retry && html`<td><button type="button" onClick=${() => retry(e)}>Retry</button></td>`}</tr>`)}</tbody>
  </table></div>`;
}

export function QueuePage() {
  const [queue, setQueue] = useState(null);
  const [error, setError] = useState(null);
  const [done, setDone] = useState("");
  const [loads, setLoads] = useState(0);
  useEffect(() => {
    let live = true;
    const load = () => api("/v1/queue").then(q => live && (setQueue(q), setError(null))).catch(e => live && setError(e));
    load();
    const timer = setInterval(load, 5000);
    return () => { live = false; clearInterval(timer); };
  }, [loads]);
  const act = async request => {
    try { setDone(await request()); setLoads(n => n + 1); } catch (e) { setError(e); }
  };
  const retry = e => act(async () => {
    await api(`/v1/executions/${encodeURIComponent(e.id)}/retry`, { method: "POST" });
    return `Execution ${e.id.slice(0, 13)}… is queued again.`;
  });
  const redrive = name => {
    if (!confirm(`Run every dead or expired execution of ${name} again?`)) return;
    act(async () => {
      const r = await api(`/v1/functions/${encodeURIComponent(name)}/redrive`, { method: "POST" });
      return `${r.redriven} executions of ${name} are queued again.`;
    });
  };
  if (!queue) return html`<${Failure} error=${error} />${!error && html`<p class="muted">Loading…</p>`}`;
  return html`<h1>Queue</h1><${Failure} error=${error} />
    <dl class="facts queue">
      <dt>Queued</dt><dd data-queued=${queue.queued}>${queue.queued}</dd>
      <dt>Running</dt><dd>${queue.running}</dd>
      <dt>Oldest waiting</dt><dd>${queue.oldest_age_ms === null ? "–" : ms(queue.oldest_age_ms)}</dd>
    </dl>
    <h2>Waiting to be retried</h2><${Table} executions=${queue.retrying} empty="Nothing waits for a retry." />
    <h2>Dead lately</h2>
    ${done && html`<p role="status" class="ok">${done}</p>`}
    ${[...new Set(queue.dead.map(e => e.function))].map(name => html`
      <button type="button" class="redrive" onClick=${() => redrive(name)}>Redrive ${name}</button> `)}
    <${Table} executions=${queue.dead} empty="No execution has died." retry=${retry} />`;
}
