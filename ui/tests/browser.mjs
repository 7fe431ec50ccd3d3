// The tests' browser: Debian's Chromium, headless, driven by playwright-core.
//
// A test is a module run by `node ui/tests/NAME.mjs URL` (the Rust test `crates/wafer/tests/browser.rs`
// starts the server and runs it). It exits 0 when every check passed; a failed check throws, which
// prints the message and exits 1. Screenshots go to $WAFER_SCREENSHOTS (default: a temporary dir),
// named by test and step, and are never committed.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshots = process.env.WAFER_SCREENSHOTS || join(tmpdir(), "wafer-screenshots");

/** Runs `test(page, url, shot)` in a fresh browser at 1280×800; returns when it passed. The page may
 *  request `url` and the origins in `allow`, nothing else. */
export async function run(name, test, { allow = [] } = {}) {
  const url = process.argv[2];
  if (!url) throw new Error("usage: node " + name + ".mjs SERVER_URL");
  mkdirSync(screenshots, { recursive: true });
  const browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  const outside = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    // Every request the page makes must stay on the server: no CDN, nothing outside.
    page.on("request", request => {
      const target = request.url();
      if (![url, ...allow, "data:"].some(ok => target.startsWith(ok))) outside.push(target);
    });
    const errors = [];
    page.on("pageerror", e => (errors.push(e.message), console.error("page error:", e.message)));
    page.on("requestfailed", r => console.error("request failed:", r.url(), r.failure()?.errorText));
    let step = 0;
    const shot = async label => {
      step += 1;
      await page.screenshot({ path: join(screenshots, `${name}-${String(step).padStart(2, "0")}-${label}.png`), fullPage: true });
    };
    try {
      await test(page, url, shot);
    } catch (e) {
      await shot("failed").catch(() => {});
      throw e;
    }
    check(outside.length === 0, "requests left the server: " + outside.join(", "));
    check(errors.length === 0, "the page threw: " + errors.join("; "));
  } finally {
    await browser.close();
  }
  console.log(`${name}: passed (screenshots in ${screenshots})`);
}

/** Fails the test with `message` unless `ok`. */
export function check(ok, message) {
  if (!ok) throw new Error(message);
}
