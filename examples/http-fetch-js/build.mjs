// Builds app.js into hello.wasm with componentize-js, against the WIT directory given as argv[2]
// (relative to this directory; see ../build.sh for how it is prepared).
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const witPath = process.argv[2];
const { component } = await componentize({
  sourcePath: "app.js",
  witPath,
  worldName: "wasi:http/proxy@0.2.10",
});
await writeFile("hello.wasm", component);
console.log(`hello.wasm: ${component.length} bytes`);
