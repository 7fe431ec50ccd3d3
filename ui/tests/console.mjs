// The console against a server holding `greeter` (two versions, three calls), `broken` (three failed
// calls and a dead async execution) and `chatty` (writes a log line per call): the list, a function's
// traffic changing after calls, failures, rollback, a canary, the live log tail, a deploy by file, and
// the queue with a retry and a redrive of the dead execution.
//
// node console.mjs CONSOLE_URL MAIN_URL UPLOAD.wasm

import { run, check } from "./browser.mjs";
import { readFileSync } from "node:fs";
import { basename } from "node:path";

const [main, upload] = process.argv.slice(3);
const call = async path => (await fetch(main + path)).text();
const json = async path => (await fetch(main + path)).json();

/** Waits until `probe` (polled every 100 ms, up to 15 s) returns something true, and returns it. */
async function until(what, probe) {
  for (let i = 0; i < 150; i++) {
    const found = await probe();
    if (found) return found;
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

await run("console", async (page, url, shot) => {
  // The main listener's /ui sends the browser to the console's own listener.
  await page.goto(main + "/ui");
  check(page.url() === url + "/ui/", `redirected to ${page.url()}, not ${url}/ui/`);
  await page.locator("tr[data-function=greeter]").waitFor();
  const row = name => page.locator(`tr[data-function=${name}]`);
  check(await page.locator("tbody tr").count() === 3, "three functions listed");
  check((await row("greeter").innerText()).includes("v2"), "greeter's live version");
  check((await row("greeter").locator(".calls").innerText()) === "3", "greeter's three calls in the last hour");
  check((await row("broken").locator(".errors").innerText()).startsWith("100.0"), "broken's failures show");
  // Filtering and sorting.
  await page.getByLabel("Filter by name").fill("bro");
  check(await page.locator("tbody tr").count() === 1, "the filter leaves one row");
  await page.getByLabel("Filter by name").fill("");
  await page.getByRole("button", { name: /^Calls/ }).click();
  await page.getByRole("button", { name: /^Calls/ }).click();
  check(await page.locator("tbody tr").first().getAttribute("data-function") !== "chatty", "sorted by calls, most first");
  await shot("functions");

  // A function's page: its traffic, then more calls, and the figures follow.
  await row("greeter").getByRole("link").click();
  const totals = page.locator(".totals");
  await totals.waitFor();
  check(await totals.getAttribute("data-invocations") === "3", "the page counts three calls");
  // uPlot draws in an effect that runs after the page paints the totals, so wait for both canvases.
  await page.locator("figure.chart canvas").nth(1).waitFor();
  check(await page.locator("figure.chart canvas").count() >= 2, "two charts drawn");
  for (let i = 0; i < 4; i++) await call("/fn/greeter");
  await page.waitForFunction(() => document.querySelector(".totals")?.dataset.invocations === "7", null, { timeout: 15000 });
  await page.getByRole("button", { name: "15 min" }).click();
  check(await page.getByRole("button", { name: "15 min" }).getAttribute("aria-pressed") === "true", "the window is chosen");
  await shot("greeter");

  // Rollback asks first, then v1 answers.
  page.once("dialog", dialog => dialog.accept());
  await page.getByRole("button", { name: "Make v1 live" }).click();
  await page.locator("h1", { hasText: "v1 live" }).waitFor();
  check(await call("/fn/greeter") === "one", "after the rollback greeter answers as v1");

  // A canary from the releases section: half the live calls to v2, then ended.
  await page.getByLabel("Canary share (%)").fill("50");
  await page.getByLabel("Canary version").selectOption("2");
  await page.getByRole("button", { name: "Start canary" }).click();
  await page.locator("tr[data-alias=live]", { hasText: "v2 (50 %)" }).waitFor();
  const live = await json("/v1/functions/greeter/aliases/live");
  check(live.version === 1 && live.weights?.["2"] === 0.5, `live sends half its calls to v2: ${JSON.stringify(live)}`);
  const answers = new Set();
  for (let i = 0; i < 40; i++) answers.add(await call("/fn/greeter"));
  check(answers.has("one") && answers.has("two"), `both versions answer: ${[...answers]}`);
  await shot("canary");
  await page.getByRole("button", { name: "End canary" }).click();
  await page.waitForFunction(() => document.querySelector("tr[data-alias=live] td:nth-child(2)")?.textContent === "v1");
  check(await call("/fn/greeter") === "one", "the canary ended");

  // Deploying by dropping a file: the live config is shown, then the upload and compile, then v3 is live.
  const dropped = await page.evaluateHandle(([bytes, name]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "application/wasm" }));
    return transfer;
  }, [[...readFileSync(upload)], basename(upload)]);
  await page.locator(".drop").dispatchEvent("drop", { dataTransfer: dropped });
  const config = page.getByLabel("Config (JSON)");
  await config.waitFor();
  check((await config.inputValue()).includes("{"), "the live config is shown to edit");
  await page.getByRole("button", { name: "Deploy", exact: true }).click();
  await page.getByText("Deployed v3").waitFor({ timeout: 30000 });
  check(await call("/fn/greeter") === "three", "the dropped file is live");
  await shot("deployed");

  // The executions table, and one execution.
  await page.locator("#executions ~ table a, section[aria-labelledby=executions] a.mono").first().click();
  await page.locator("h1", { hasText: "Execution" }).waitFor();
  check((await page.locator("dl.facts").innerText()).includes("Duration"), "the execution's timings");
  await shot("execution");

  // The log tail shows a line written after the page opened.
  await page.goto(url + "/ui/#/f/chatty");
  await page.locator("#logs", { hasText: "following" }).waitFor();
  await call("/fn/chatty");
  await page.locator("pre.log", { hasText: "chatty says hello" }).waitFor({ timeout: 15000 });
  await shot("log");

  // The queue page: nothing waits, and broken's async execution is among the dead.
  await page.getByRole("link", { name: "Queue" }).click();
  await page.locator("dd[data-queued]").waitFor();
  check(await page.locator("dd[data-queued]").getAttribute("data-queued") === "0", "nothing queued");
  const dead = page.locator("h2", { hasText: "Dead lately" }).locator("xpath=following-sibling::div[1]");
  check((await dead.innerText()).includes("broken"), "broken's dead execution is listed");
  check((await dead.innerText()).includes("dead"), "its status is written out");
  await shot("queue");
  // Retried from the queue page, it runs again as a further attempt (and dies again: broken traps).
  const deadRow = dead.locator("tr[data-execution]").first();
  const deadId = await deadRow.getAttribute("data-execution");
  await deadRow.getByRole("button", { name: "Retry" }).click();
  await page.getByText("is queued again").waitFor();
  await until("the retried execution to die again", async () => {
    const e = await json(`/v1/executions/${deadId}`);
    return e.status === "dead" && e.attempts === 2;
  });
  page.once("dialog", dialog => dialog.accept());
  await page.getByRole("button", { name: "Redrive broken" }).click();
  await page.getByText(/executions of broken are queued again/).waitFor();
  await until("the redriven execution to die again", async () => (await json(`/v1/executions/${deadId}`)).attempts === 3);

  // The nodes page: this one node, up to date.
  await page.getByRole("link", { name: "Nodes" }).click();
  await page.locator("tr[data-node]").waitFor();
  check(await page.locator("tr[data-node]").count() === 1, "one node on the embedded store");
  check((await page.locator("tr[data-node]").innerText()).includes("this one"), "it says which node answers");

  // A narrow window still reads.
  await page.setViewportSize({ width: 420, height: 800 });
  await page.goto(url + "/ui/");
  await page.locator("tr[data-function=greeter]").waitFor();
  await shot("narrow");
}, { allow: [main] });
