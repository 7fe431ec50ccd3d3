// The console's way to the API: same origin, the token (if the server has one) in the
// Authorization header, kept in this tab's sessionStorage of the console's own origin.

const TOKEN = "wafer-token";

export const token = () => sessionStorage.getItem(TOKEN);
export const setToken = t => (t ? sessionStorage.setItem(TOKEN, t) : sessionStorage.removeItem(TOKEN));

/** An answer of the API that was not a success: its status, stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: "Bearer " + t } : extra;
}

async function failure(response) {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, "http_" + response.status, response.statusText);
  }
}

/** `GET path` (or another method with a JSON body), decoded from JSON. */
export async function api(path, { method = "GET", json } = {}) {
  const init = { method, headers: headers(json === undefined ? {} : { "Content-Type": "application/json" }) };
  if (json !== undefined) init.body = JSON.stringify(json);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

/** Follows `name`'s log: calls `onLine` with each new line until `signal` aborts. EventSource cannot
 *  send the token, so this reads the server-sent events through fetch. */
export async function followLogs(name, onLine, signal) {
  const response = await fetch(`/v1/functions/${encodeURIComponent(name)}/logs?follow=true&limit=20`, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event.split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).trimStart()).join("\n");
      if (data) onLine(JSON.parse(data));
    }
  }
}

/** Deploys `file` as a new version of `name` with `config`; reports upload progress (0..1) and then
 *  `"compiling"` through `onProgress`. XMLHttpRequest, because fetch reports no upload progress. */
export function deploy(name, file, config, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("module", file, file.name);
    form.append("config", new Blob([JSON.stringify(config)], { type: "application/json" }));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/functions/${encodeURIComponent(name)}/versions`);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = e => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.upload.onload = () => onProgress("compiling");
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload failed"));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body?.error?.code || "http_" + xhr.status, body?.error?.message || xhr.statusText));
    };
    xhr.send(form);
  });
}
