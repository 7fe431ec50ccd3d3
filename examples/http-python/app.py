"""A wasi:http handler in Python, built into a component with componentize-py.

GET answers with a greeting naming the method and path it saw; POST echoes the request body back,
reversed. It reads and writes through the wasi:http 0.2 types directly, with no framework.

Every response carries `x-instance-requests`: how many requests this instance has served, counting this
one. It is 1 unless the function is deployed with `reuse`, which lets one instance serve several. GET
/fail raises, so the instance traps: the way an unhandled error looks from outside.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import streams
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    stream = body.stream()
    chunks = []
    while True:
        try:
            chunks.append(stream.blocking_read(64 * 1024))
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise
    stream.__exit__(None, None, None)
    return b"".join(chunks)


served = 0


def respond(response_out: ResponseOutparam, status: int, text: bytes) -> None:
    headers = Fields.from_list(
        [
            ("content-type", b"text/plain; charset=utf-8"),
            ("x-instance-requests", str(served).encode()),
        ]
    )
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = body.write()
    offset = 0
    while offset < len(text):
        chunk = text[offset : offset + 4096]
        stream.blocking_write_and_flush(chunk)
        offset += len(chunk)
    stream.__exit__(None, None, None)
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        global served
        served += 1
        method = request.method()
        path = request.path_with_query() or "/"
        if isinstance(method, Method_Get) and path.startswith("/fail"):
            raise RuntimeError("asked to fail")
        if isinstance(method, Method_Post):
            respond(response_out, 200, read_body(request)[::-1])
        elif isinstance(method, Method_Get):
            respond(response_out, 200, f"Hello from Python! GET {path}\n".encode())
        else:
            respond(response_out, 405, b"only GET and POST\n")
