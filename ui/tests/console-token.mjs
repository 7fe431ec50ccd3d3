// With --token the console shows nothing of the API until the token is given.
//
// node console-token.mjs CONSOLE_URL TOKEN

import { run, check } from "./browser.mjs";

const token = process.argv[3];

await run("console-token", async (page, url, shot) => {
  await page.goto(url + "/ui/");
  const field = page.getByLabel("API token");
  await field.waitFor();
  check(!(await page.content()).includes("hidden"), "no function shows before the token");
  await shot("asks");
  await field.fill("wrong");
  await page.keyboard.press("Enter");
  await page.getByRole("alert").waitFor();
  check((await page.getByRole("alert").innerText()).includes("not valid"), "a wrong token is refused");
  await field.fill(token);
  await page.keyboard.press("Enter");
  await page.locator("tr[data-function=hidden]").waitFor();
  // Kept for the tab: a reload does not ask again.
  await page.reload();
  await page.locator("tr[data-function=hidden]").waitFor();
  await shot("open");
});
