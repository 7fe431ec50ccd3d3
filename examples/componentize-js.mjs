// Builds DIR/app.js into DIR/hello.wasm with componentize-js, against the WIT directory WIT (a path
// relative to this directory; see build.sh for how it is prepared).
//
//   node componentize-js.mjs DIR WIT
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const [dir, witPath] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: `${dir}/app.js`,
  witPath,
  worldName: "wasi:http/proxy@0.2.10",
});
await writeFile(`${dir}/hello.wasm`, component);
console.log(`${dir}/hello.wasm: ${component.length} bytes`);
