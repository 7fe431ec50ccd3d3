// Builds the console into crates/wafer-server/src/routes/console/, where the server embeds it:
// app.js (the code, Preact, htm and uPlot bundled and minified), app.css (uPlot's style and the
// console's) and index.html. Run `npm run build --prefix ui` after changing ui/src, and commit the result.

import { build } from "esbuild";
import { copyFileSync, readFileSync, writeFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ui = dirname(fileURLToPath(import.meta.url));
// WAFER_UI_OUT builds elsewhere: the tests build there and compare with what is committed.
const out = process.env.WAFER_UI_OUT || join(ui, "../crates/wafer-server/src/routes/console");

await build({
  entryPoints: [join(ui, "src/main.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  legalComments: "eof",
  outfile: join(out, "app.js"),
});
const css = [join(ui, "node_modules/uplot/dist/uPlot.min.css"), join(ui, "src/style.css")]
  .map(f => readFileSync(f, "utf8")).join("\n");
writeFileSync(join(out, "app.css"), css);
copyFileSync(join(ui, "src/index.html"), join(out, "index.html"));
for (const f of ["app.js", "app.css", "index.html"]) console.log(`${f}: ${statSync(join(out, f)).size} bytes`);
