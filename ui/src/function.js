// One function: its traffic over a chosen window, versions with rollback, releases (aliases and a
// canary), configuration, executions, a live log tail, and deploying a new version by dropping a .wasm
// file.

import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api, deploy, followLogs } from "./api.js";
import { WindowCharts } from "./chart.js";
import { Failure, Status, ms, pct, when } from "./format.js";
import { Releases } from "./releases.js";

const WINDOWS = [["15m", "1m", "15 min"], ["1h", "1m", "1 hour"], ["24h", "10m", "24 hours"]];
const path = name => "/v1/functions/" + encodeURIComponent(name);

function Traffic({ name, version }) {
  const [choice, setChoice] = useState(1);
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    const [since, bucket] = WINDOWS[choice];
    const load = () => api(`${path(name)}/stats?since=${since}&bucket=${bucket}`)
      .then(s => live && (setStats(s), setError(null))).catch(e => live && setError(e));
    load();
    const timer = setInterval(load, 5000);
    return () => { live = false; clearInterval(timer); };
  }, [name, choice, version]);
  const w = stats?.window;
  return html`<section aria-labelledby="traffic">
    <h2 id="traffic">Traffic</h2>
    <div role="group" aria-label="Window" class="choices">${WINDOWS.map(([, , label], i) => html`
      <button type="button" aria-pressed=${i === choice} onClick=${() => setChoice(i)}>${label}</button>`)}</div>
    <${Failure} error=${error} />
    ${w && html`<p class="totals" data-invocations=${w.invocations} data-failed=${w.failed}>
      <strong>${w.invocations}</strong> invocations · <strong>${w.failed}</strong> failed (${pct(w.error_rate)})
      · p50 ${ms(w.p50_ms)} · p99 ${ms(w.p99_ms)}</p>
      <${WindowCharts} window=${w} />`}
  </section>`;
}

function Versions({ name, info, onChange }) {
  const [versions, setVersions] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => { api(`${path(name)}/versions`).then(v => setVersions(v.versions)).catch(setError); }, [name, info.live_version, info.latest_version]);
  const rollback = async version => {
    if (!confirm(`Make version ${version} of ${name} live? Calls will run it at once.`)) return;
    try { await api(`${path(name)}/rollback`, { method: "POST", json: { version } }); onChange(); } catch (e) { setError(e); }
  };
  return html`<section aria-labelledby="versions"><h2 id="versions">Versions</h2><${Failure} error=${error} />
    <div class="scroll"><table class="list"><thead><tr><th>Version</th><th>Kind</th><th>Deployed</th><th>Size</th><th>Digest</th><th></th></tr></thead>
    <tbody>${versions.slice().reverse().map(v => html`<tr data-version=${v.version}>
      <td>v${v.version}</td><td>${v.kind}</td><td>${when(v.created_at)}</td><td>${(v.size / 1024).toFixed(1)} KiB</td>
      <td class="mono">${v.digest.slice(0, 12)}</td>
      <td>${v.live ? html`<span class="status succeeded">live</span>`
        : html`<button type="button" onClick=${() => rollback(v.version)}>Make v${v.version} live</button>`}</td>
    </tr>`)}</tbody></table></div></section>`;
}

function Configuration({ name, info }) {
  const [view, setView] = useState(null);
  useEffect(() => { api(`${path(name)}/config`).then(setView).catch(() => setView(null)); }, [name, info.live_version]);
  const limits = info.limits;
  return html`<section aria-labelledby="config"><h2 id="config">Configuration</h2>
    <dl class="facts">
      <dt>Memory</dt><dd>${limits.memory_mb} MiB</dd><dt>Timeout</dt><dd>${ms(limits.timeout_ms)}</dd>
      <dt>Concurrency</dt><dd>${limits.max_concurrency ?? "unlimited"}</dd>
      <dt>Routes</dt><dd class="mono">${(info.config.routes || []).join(" ") || "–"}</dd>
      <dt>Variables</dt><dd class="mono">${view ? Object.keys(view.variables).join(", ") || "–" : "–"}</dd>
      <dt>Secrets</dt><dd class="mono">${view ? view.secrets.join(", ") || "–" : "–"}</dd>
    </dl>
    <details><summary>The live version's config</summary><pre>${JSON.stringify(info.config, null, 2)}</pre></details>
  </section>`;
}

function Executions({ name, version }) {
  const [status, setStatus] = useState("");
  const [pages, setPages] = useState([undefined]);
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  const before = pages[pages.length - 1];
  useEffect(() => {
    const query = new URLSearchParams({ limit: "20" });
    if (status) query.set("status", status);
    if (before) query.set("before", before);
    api(`${path(name)}/executions?${query}`).then(l => (setList(l), setError(null))).catch(setError);
  }, [name, status, before, version]);
  return html`<section aria-labelledby="executions"><h2 id="executions">Executions</h2>
    <label>Status <select value=${status} onChange=${e => (setStatus(e.target.value), setPages([undefined]))}>
      ${["", "succeeded", "failed", "queued", "running", "dead", "expired"].map(s => html`<option value=${s}>${s || "any"}</option>`)}
    </select></label>
    <${Failure} error=${error} />
    ${list && html`<div class="scroll"><table class="list"><thead><tr><th>Execution</th><th>Status</th><th>Trigger</th><th>Version</th><th>Queued</th><th>Duration</th></tr></thead>
      <tbody>${list.executions.map(e => html`<tr>
        <td><a class="mono" href=${`#/f/${encodeURIComponent(name)}/e/${e.id}`}>${e.id.slice(0, 13)}…</a></td>
        <td><${Status} status=${e.status} /></td><td>${e.trigger}</td><td>v${e.version}</td>
        <td>${when(e.queued_at)}</td><td class="num">${ms(e.duration_ms)}</td></tr>`)}</tbody></table></div>
      <div class="pager">
        <button type="button" disabled=${pages.length === 1} onClick=${() => setPages(p => p.slice(0, -1))}>Newer</button>
        <button type="button" disabled=${!list.next} onClick=${() => setPages(p => [...p, list.next])}>Older</button>
      </div>`}
  </section>`;
}

function LogTail({ name }) {
  const [lines, setLines] = useState([]);
  const [state, setState] = useState("connecting");
  useEffect(() => {
    const stop = new AbortController();
    setLines([]);
    setState("following");
    followLogs(name, line => setLines(l => [...l.slice(-199), line]), stop.signal)
      .then(() => setState("ended"))
      .catch(e => stop.signal.aborted || setState("failed: " + e.message));
    return () => stop.abort();
  }, [name]);
  return html`<section aria-labelledby="logs"><h2 id="logs">Log <small class="muted">${state}</small></h2>
    <pre class="log" role="log" aria-live="polite">${lines.map(l => html`<div class=${"line " + l.level}><span class="muted">${new Date(l.at).toLocaleTimeString()}</span> ${l.line}</div>`)}</pre>
  </section>`;
}

function Deploy({ name, info, onDeployed }) {
  const [file, setFile] = useState(null);
  const [config, setConfig] = useState("");
  const [progress, setProgress] = useState(null);
  const [started, setStarted] = useState(0);
  const [now, setNow] = useState(0);
  const [result, setResult] = useState(null);
  const choose = f => {
    if (!f) return;
    setFile(f);
    setResult(null);
    setConfig(JSON.stringify(info.config, null, 2));
  };
  useEffect(() => {
    if (progress !== "compiling") return;
    const timer = setInterval(() => setNow(Date.now()), 200);
    return () => clearInterval(timer);
  }, [progress]);
  const send = async () => {
    let parsed;
    try { parsed = JSON.parse(config); } catch (e) { setResult({ error: "The config is not JSON: " + e.message }); return; }
    setStarted(Date.now());
    setNow(Date.now());
    setProgress(0);
    try {
      const version = await deploy(name, file, parsed, p => { if (p === "compiling") setStarted(Date.now()); setProgress(p); });
      setResult({ ok: `Deployed v${version.version}: live now.` });
      setFile(null);
      onDeployed();
    } catch (e) {
      setResult({ error: e.message });
    } finally {
      setProgress(null);
    }
  };
  return html`<section aria-labelledby="deploy"><h2 id="deploy">Deploy a new version</h2>
    <label class="drop" onDragOver=${e => e.preventDefault()} onDrop=${e => { e.preventDefault(); choose(e.dataTransfer.files[0]); }}>
      Drop a .wasm file here, or choose one
      <input type="file" accept=".wasm,application/wasm" onChange=${e => choose(e.target.files[0])} />
    </label>
    ${file && html`<div class="deploying">
      <p>${file.name} (${(file.size / 1024).toFixed(1)} KiB) with the live version's config — edit it before sending:</p>
      <label for="deploy-config">Config (JSON)</label>
      <textarea id="deploy-config" rows="8" value=${config} onInput=${e => setConfig(e.target.value)}></textarea>
      <button type="button" onClick=${send} disabled=${progress !== null}>Deploy</button>
    </div>`}
    ${progress !== null && html`<p class="progress" role="status">${progress === "compiling"
      ? `Uploaded; compiling… ${((now - started) / 1000).toFixed(1)} s`
      : html`Uploading <progress max="1" value=${progress}></progress> ${Math.round(progress * 100)} %`}</p>`}
    ${result?.ok && html`<p role="status" class="ok">${result.ok}</p>`}
    ${result?.error && html`<p role="alert" class="error">${result.error}</p>`}
  </section>`;
}

export function FunctionPage({ name }) {
  const [info, setInfo] = useState(null);
  const [error, setError] = useState(null);
  const [version, setVersion] = useState(0);
  const reload = () => api(path(name)).then(i => (setInfo(i), setVersion(v => v + 1))).catch(setError);
  useEffect(() => { reload(); }, [name]);
  if (!info) return html`<${Failure} error=${error} />${!error && html`<p class="muted">Loading…</p>`}`;
  return html`
    <p><a href="#/">← Functions</a></p>
    <h1>${name} <small class="muted">${info.kind} · v${info.live_version} live${Object.keys(info.live_weights || {}).length ? " with a canary" : ""}</small></h1>
    <${Traffic} name=${name} version=${version} />
    <div class="columns">
      <${Versions} name=${name} info=${info} onChange=${reload} />
      <${Configuration} name=${name} info=${info} />
    </div>
    <${Releases} name=${name} info=${info} onChange=${reload} />
    <${Executions} name=${name} version=${version} />
    <${LogTail} name=${name} />
    <${Deploy} name=${name} info=${info} onDeployed=${reload} />`;
}
