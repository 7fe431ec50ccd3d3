// The console's load time against a server holding many functions: deploys N copies of the WAGI
// greeter (one module, N functions), calls each once, then opens the console in headless Chromium
// and times the functions page from navigation until all N rows are drawn, and a function's page until
// its charts are drawn. Each page is loaded five times; the median is reported.
//
// node bench/console/page-load.mjs MAIN_URL CONSOLE_URL [N=1000]   (npm ci --prefix ui first)

import { chromium } from "../../ui/node_modules/playwright-core/index.mjs";
import { readFileSync } from "node:fs";

const [main, consoleUrl, n = "1000"] = process.argv.slice(2);
const count = Number(n);
const wasm = readFileSync(new URL("../../examples/wagi-c/hello.wasm", import.meta.url));
for (let i = 0; i < count; i += 25) {
  await Promise.all(Array.from({ length: Math.min(25, count - i) }, async (_, j) => {
    const name = `f${String(i + j).padStart(4, "0")}`;
    const deployed = await fetch(`${main}/v1/functions/${name}/versions`, {
      method: "POST", headers: { "content-type": "application/wasm" }, body: wasm,
    });
    if (deployed.status !== 201) throw new Error(`deploy ${name}: ${deployed.status} ${await deployed.text()}`);
    await (await fetch(`${main}/fn/${name}?name=bench`)).text();
  }));
}
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless", "--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const median = xs => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (url, ready) => {
  const runs = [];
  for (let i = 0; i < 5; i++) {
    await page.goto("about:blank");
    const started = performance.now();
    await page.goto(url);
    await ready();
    runs.push(performance.now() - started);
  }
  return median(runs);
};
const list = await time(`${consoleUrl}/ui/`, () =>
  page.waitForFunction(c => document.querySelectorAll("tbody tr").length === c, count, { timeout: 60000 }));
const one = await time(`${consoleUrl}/ui/#/f/f0000`, () => page.locator("figure.chart canvas").nth(1).waitFor());
await browser.close();
console.log(`functions page, ${count} functions: ${list.toFixed(0)} ms to every row (median of 5)`);
console.log(`a function's page: ${one.toFixed(0)} ms to its charts (median of 5)`);
