// Charts of a function's window: invocations per bucket (succeeded and failed) and its duration
// percentiles, drawn with uPlot.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { html } from "./html.js";

/** A uPlot chart of `series` (each `[label, colour, values]`) over `times` (seconds). */
export function Chart({ title, times, series, unit }) {
  const box = useRef(null);
  useEffect(() => {
    const width = Math.max(280, box.current.clientWidth);
    const plot = new uPlot({
      width, height: 220, title,
      scales: { x: { time: true } },
      axes: [{}, { size: 70, values: (_, ticks) => ticks.map(t => t + (unit || "")) }],
      series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false }))],
    }, [times, ...series.map(s => s[2])], box.current);
    return () => plot.destroy();
  }, [title, times, series, unit]);
  return html`<figure class="chart" ref=${box} aria-label=${title}></figure>`;
}

/** The window's two charts, and its numbers as text for those who do not see the charts. */
export function WindowCharts({ window }) {
  const times = window.buckets.map(b => b.start / 1000);
  return html`<div class="charts">
    <${Chart} title="Invocations" times=${times} series=${[
      ["succeeded", "#2f7d4f", window.buckets.map(b => b.succeeded)],
      ["failed", "#b3261e", window.buckets.map(b => b.failed)],
    ]} />
    <${Chart} title="Duration" unit=" ms" times=${times} series=${[
      ["p50", "#2b6cb0", window.buckets.map(b => b.p50_ms)],
      ["p99", "#8a4baf", window.buckets.map(b => b.p99_ms)],
    ]} />
  </div>`;
}
