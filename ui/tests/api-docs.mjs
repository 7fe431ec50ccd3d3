// /api/docs renders the OpenAPI description: every tag's operations as expandable entries with their
// parameters and responses, and the schemas with their fields.

import { run, check } from "./browser.mjs";

await run("api-docs", async (page, url, shot) => {
  await page.goto(url + "/api/docs");
  await page.locator("details").first().waitFor();
  const text = await page.locator("main").innerText();
  check(!text.includes("[object"), "an element was written as text: " + text.slice(0, 300));
  for (const tag of ["functions", "invoke", "executions", "state", "operations"]) {
    const heading = page.locator("h2", { hasText: new RegExp("^" + tag + "\\b") });
    check(await heading.count() === 1, `no heading for the ${tag} tag`);
  }
  const deploy = page.locator("details", { has: page.locator(".path", { hasText: /^\/v1\/functions\/\{name\}\/versions$/ }) })
    .filter({ has: page.locator(".method.post") });
  check(await deploy.count() === 1, "no entry for POST /v1/functions/{name}/versions");
  const body = deploy.locator(".body");
  check(!(await body.isVisible()), "an entry starts closed");
  await deploy.locator("summary").click();
  check(await body.isVisible(), "clicking an entry opens it");
  const bodyText = await body.innerText();
  check(/name\s*\*/.test(bodyText), "the path parameter `name` is listed as required: " + bodyText);
  check(bodyText.includes("201") && bodyText.includes("VersionInfo"), "its 201 response and body: " + bodyText);
  // The keyboard opens an entry too.
  const list = page.locator("details", { has: page.locator(".path", { hasText: /^\/v1\/functions$/ }) });
  await list.locator("summary").focus();
  await page.keyboard.press("Enter");
  check(await list.locator(".body").isVisible(), "Enter opens the focused entry");
  const schema = page.locator("#schema-FunctionInfo");
  check(await schema.count() === 1, "no FunctionInfo schema");
  check((await schema.innerText()).includes("name"), "FunctionInfo lists its fields");
  // A schema reference links to the schema.
  const link = body.locator("a[href='#schema-VersionInfo']").first();
  check(await link.count() === 1, "the response body links to its schema");
  await shot("open");
});
