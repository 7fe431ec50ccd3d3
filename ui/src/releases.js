// A function's releases: its aliases and how each splits calls, and a canary on live traffic — a
// share of unqualified calls sent to another version, started and ended here.

import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api } from "./api.js";
import { Failure } from "./format.js";

const path = name => "/v1/functions/" + encodeURIComponent(name);

/** `3`, or `3 (90 %) · 4 (10 %)`. */
export function split(alias) {
  const weights = Object.entries(alias.weights || {}).filter(([, w]) => w > 0);
  if (!weights.length) return `v${alias.version}`;
  const rest = 1 - weights.reduce((sum, [, w]) => sum + w, 0);
  const share = w => `${Math.round(w * 1000) / 10} %`;
  return [`v${alias.version} (${share(rest)})`, ...weights.map(([v, w]) => `v${v} (${share(w)})`)].join(" · ");
}

export function Releases({ name, info, onChange }) {
  const [aliases, setAliases] = useState([]);
  const [error, setError] = useState(null);
  const [percent, setPercent] = useState("10");
  const candidates = [];
  for (let v = info.latest_version; v >= 1; v--) if (v !== info.live_version) candidates.push(v);
  const [canary, setCanary] = useState(candidates[0]);
  const weights = JSON.stringify(info.live_weights || {});
  useEffect(() => {
    api(`${path(name)}/aliases`).then(a => (setAliases(a.aliases), setError(null))).catch(setError);
  }, [name, info.live_version, info.latest_version, weights]);
  const setLive = async live => {
    try {
      await api(`${path(name)}/aliases/live`, { method: "PUT", json: { version: info.live_version, weights: live } });
      onChange();
    } catch (e) { setError(e); }
  };
  const start = e => {
    e.preventDefault();
    const share = Number(percent) / 100;
    if (!(share > 0 && share <= 1)) return setError(new Error("The share is a number from 1 to 100."));
    setLive({ [canary ?? candidates[0]]: share });
  };
  const weighted = Object.keys(info.live_weights || {}).length > 0;
  return html`<section aria-labelledby="releases"><h2 id="releases">Releases</h2><${Failure} error=${error} />
    <div class="scroll"><table class="list"><thead><tr><th>Alias</th><th>Sends calls to</th><th>Called at</th></tr></thead>
    <tbody>${aliases.map(a => html`<tr data-alias=${a.name}>
      <td>${a.name}</td><td>${split(a)}</td>
      <td class="mono">/fn/${name}${a.name === "live" ? "" : ":" + a.name}</td></tr>`)}</tbody></table></div>
    ${candidates.length > 0 && html`<form class="canary" onSubmit=${start}>
      <label>Send <input type="number" min="1" max="100" step="1" value=${percent}
        aria-label="Canary share (%)" onInput=${e => setPercent(e.target.value)} /> % of live calls to</label>
      <select aria-label="Canary version" value=${canary} onChange=${e => setCanary(Number(e.target.value))}>
        ${candidates.map(v => html`<option value=${v}>v${v}</option>`)}</select>
      <button type="submit">Start canary</button>
      ${weighted && html`<button type="button" onClick=${() => setLive({})}>End canary</button>`}
    </form>`}
  </section>`;
}
