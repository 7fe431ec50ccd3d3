// With an API key the console shows the functions the key may read, and says why when an action is not
// the key's to take.
//
// node console-key.mjs CONSOLE_URL KEY (the key's scope is read:hello-*; the server holds hello-a, with
// two versions, and other)

import { run, check } from "./browser.mjs";

const key = process.argv[3];

await run("console-key", async (page, url, shot) => {
  await page.goto(url + "/ui/");
  const field = page.getByLabel("API token or key");
  await field.waitFor();
  await field.fill(key);
  await page.keyboard.press("Enter");
  await page.locator("tr[data-function=hello-a]").waitFor();
  check((await page.locator("tr[data-function=other]").count()) === 0, "a function the key may not read is not listed");
  await shot("listed");
  await page.goto(url + "/ui/#/f/hello-a");
  const rollback = page.getByRole("button", { name: "Make v1 live" });
  await rollback.waitFor();
  page.once("dialog", dialog => dialog.accept());
  await rollback.click();
  const refusal = page.getByRole("alert").filter({ hasText: "may not deploy" });
  await refusal.waitFor();
  check((await refusal.innerText()).includes("read:hello-*"), "the refusal names the key's scopes");
  await shot("refused");
});
