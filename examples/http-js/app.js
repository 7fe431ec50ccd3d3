// A wasi:http handler in JavaScript, built into a component with componentize-js.
//
// StarlingMonkey (the engine inside componentize-js) maps wasi:http/incoming-handler onto the web's fetch
// event, so this is ordinary service-worker style code: GET greets with the path it saw; POST answers
// with a JSON summary of the body it received.

async function handle(request) {
  const url = new URL(request.url);
  if (request.method === "POST") {
    const text = await request.text();
    const summary = { bytes: text.length, words: text.split(/\s+/).filter(Boolean).length };
    return new Response(JSON.stringify(summary) + "\n", {
      headers: { "content-type": "application/json" },
    });
  }
  if (request.method === "GET") {
    return new Response(`Hello from JavaScript! GET ${url.pathname}${url.search}\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  return new Response("only GET and POST\n", { status: 405 });
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
