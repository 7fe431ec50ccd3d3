// How the console writes numbers, times and statuses.

import { html } from "./html.js";

export const ms = v => (v === null || v === undefined ? "–" : v < 10 ? `${v.toFixed(2)} ms` : v < 1000 ? `${v.toFixed(0)} ms` : `${(v / 1000).toFixed(2)} s`);
export const pct = v => `${(v * 100).toFixed(1)} %`;
export const when = iso => (iso ? new Date(iso).toLocaleString() : "–");

/** A status as a word and a colour: the word carries it, the colour only repeats it. */
export const Status = ({ status }) => html`<span class=${"status " + status}>${status}</span>`;

/** An error message box for a failed request. */
export const Failure = ({ error }) => error ? html`<p role="alert" class="error">${error.message}</p>` : null;
