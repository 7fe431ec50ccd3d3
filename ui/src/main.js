// wafer's web console: the functions, their traffic and failures, versions, executions and logs, and
// deploys — all through the management API of the server that serves this page.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api, setToken } from "./api.js";
import { FunctionsPage } from "./functions.js";
import { FunctionPage } from "./function.js";
import { ExecutionPage } from "./execution.js";
import { QueuePage } from "./queue.js";
import { NodesPage } from "./nodes.js";

/** The page the location's hash names: `#/`, `#/f/NAME`, `#/f/NAME/e/ID`, `#/queue`, `#/nodes`. */
function useRoute() {
  const read = () => location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

function TokenForm({ onDone }) {
  const [error, setError] = useState("");
  const submit = async e => {
    e.preventDefault();
    setToken(e.target.token.value.trim());
    try {
      await api("/v1/functions");
      onDone();
    } catch (err) {
      setToken(null);
      setError(err.status === 401 ? "That token or key is not valid." : err.message);
    }
  };
  return html`<main class="narrow">
    <h1>wafer console</h1>
    <form onSubmit=${submit} aria-describedby="token-help">
      <label for="token">API token or key</label>
      <input id="token" name="token" type="password" autocomplete="off" required autofocus />
      <button type="submit">Open the console</button>
      <p id="token-help" class="muted">This server needs its token or an API key. The console keeps it for this tab only, and shows and does what it allows.</p>
      ${error && html`<p role="alert" class="error">${error}</p>`}
    </form>
  </main>`;
}

function App() {
  const [auth, setAuth] = useState("checking");
  const route = useRoute();
  useEffect(() => {
    api("/v1/functions")
      .then(() => setAuth("ok"))
      .catch(e => setAuth(e.status === 401 ? "needed" : "ok"));
  }, []);
  if (auth === "checking") return html`<p class="muted pad">Loading…</p>`;
  if (auth === "needed") return html`<${TokenForm} onDone=${() => setAuth("ok")} />`;
  const [section, name, sub, id] = route;
  let page;
  if (section === "f" && name && sub === "e" && id) page = html`<${ExecutionPage} name=${name} id=${id} />`;
  else if (section === "f" && name) page = html`<${FunctionPage} key=${name} name=${name} />`;
  else if (section === "queue") page = html`<${QueuePage} />`;
  else if (section === "nodes") page = html`<${NodesPage} />`;
  else page = html`<${FunctionsPage} />`;
  return html`
    <header class="top">
      <a class="brand" href="#/">wafer</a>
      <nav aria-label="Sections">
        ${[["", "Functions"], ["queue", "Queue"], ["nodes", "Nodes"]].map(([to, label]) => html`
          <a href=${"#/" + to} aria-current=${(section === to || (!to && section !== "queue" && section !== "nodes")) ? "page" : undefined}>${label}</a>`)}
        <a href="/api/docs">API</a></nav>
    </header>
    <main id="main">${page}</main>`;
}

render(html`<${App} />`, document.getElementById("app"));
