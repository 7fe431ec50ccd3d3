// A wasi:http handler in JavaScript that calls out over HTTP, built with componentize-js.
//
// GET /?url=http://host/path fetches that URL and answers with its status and body. wafer lets a function
// reach only the hosts in its `allowed_outbound_hosts`; a refused request answers 502 with the reason.

async function handle(request) {
  const target = new URL(request.url).searchParams.get("url");
  if (!target) {
    return new Response("pass ?url=http://host/path\n", { status: 400 });
  }
  try {
    const upstream = await fetch(target);
    const body = await upstream.text();
    return new Response(`${upstream.status} ${body}`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  } catch (e) {
    return new Response(`fetch failed: ${e}\n`, { status: 502 });
  }
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
