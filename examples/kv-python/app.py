"""An http function that keeps state, reads its configuration and logs, in Python (componentize-py).

It is built against wafer's http-function world (examples/wit/wafer.wit): wasi:http plus
wasi:keyvalue, wasi:config and wasi:logging. Deploy it with the stores it may open:

    wafer deploy kv-python/app.wasm --name notes --kv default --var greeting=hi

    GET    /kv/STORE/KEY                  the value (404 when absent)
    PUT    /kv/STORE/KEY                  store the request body
    DELETE /kv/STORE/KEY                  delete the key
    POST   /kv/STORE/KEY/increment?by=N   add N (default 1) atomically, answer the sum
    GET    /kv/STORE                      every key, one per line, across all pages
    POST   /batch/STORE                   body lines `key=value`: set them all at once, answer them
                                          read back in one get-many
    DELETE /batch/STORE?keys=a,b          delete several keys at once
    GET    /config/NAME                   a configuration variable or secret (404 when unset)
    GET    /config                        the names of all of them
    GET    /log                           one wasi:logging line per level, and a stderr warning

A store the function was not granted answers 403: wasi:keyvalue's `access-denied`.
"""

import sys
from urllib.parse import parse_qs, unquote, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, batch, logging, streams
from wit_world.imports import wasi_config_store as config
from wit_world.imports import wasi_keyvalue_store as kv
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Delete,
    Method_Get,
    Method_Post,
    Method_Put,
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


def respond(response_out: ResponseOutparam, status: int, text: bytes) -> None:
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain; charset=utf-8")]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = body.write()
    for offset in range(0, len(text), 4096):
        stream.blocking_write_and_flush(text[offset : offset + 4096])
    stream.__exit__(None, None, None)
    OutgoingBody.finish(body, None)


def method_name(method) -> str:
    names = ((Method_Get, "GET"), (Method_Put, "PUT"), (Method_Post, "POST"), (Method_Delete, "DELETE"))
    for kind, name in names:
        if isinstance(method, kind):
            return name
    return "OTHER"


def all_keys(bucket: kv.Bucket) -> list:
    keys, cursor = [], None
    while True:
        page = bucket.list_keys(cursor)
        keys.extend(page.keys)
        if page.cursor is None:
            return keys
        cursor = page.cursor


def store_route(method: str, parts: list, query: dict, request: IncomingRequest):
    """/kv/STORE[/KEY[/increment]]: the status and body to answer."""
    with kv.open(parts[0]) as bucket:
        if len(parts) == 1 and method == "GET":
            return 200, "".join(f"{key}\n" for key in all_keys(bucket)).encode()
        if len(parts) == 3 and parts[2] == "increment" and method == "POST":
            by = int(query.get("by", ["1"])[0])
            return 200, str(atomics.increment(bucket, parts[1], by)).encode()
        if len(parts) != 2:
            return 404, b"no such route\n"
        key = parts[1]
        if method == "GET":
            value = bucket.get(key)
            if value is None:
                print(f"warn: no key {key}", file=sys.stderr)
                return 404, f"no key {key}\n".encode()
            return 200, value
        if method == "PUT":
            bucket.set(key, read_body(request))
            return 204, b""
        if method == "DELETE":
            existed = bucket.exists(key)
            bucket.delete(key)
            return (204, b"") if existed else (404, f"no key {key}\n".encode())
        return 405, b"GET, PUT or DELETE\n"


def batch_route(method: str, store: str, query: dict, request: IncomingRequest):
    """/batch/STORE: several keys in one call."""
    with kv.open(store) as bucket:
        if method == "POST":
            pairs = []
            for line in read_body(request).decode().splitlines():
                key, _, value = line.partition("=")
                pairs.append((key, value.encode()))
            batch.set_many(bucket, pairs)
            found = batch.get_many(bucket, [key for key, _ in pairs])
            lines = [f"{key}={value.decode()}\n" for key, value in filter(None, found)]
            return 200, "".join(lines).encode()
        if method == "DELETE":
            keys = [k for k in query.get("keys", [""])[0].split(",") if k]
            batch.delete_many(bucket, keys)
            return 204, b""
        return 405, b"POST or DELETE\n"


def config_route(parts: list):
    if not parts:
        return 200, "".join(f"{name}\n" for name, _ in sorted(config.get_all())).encode()
    value = config.get(parts[0])
    if value is None:
        return 404, f"{parts[0]} is not set\n".encode()
    return 200, value.encode()


def log_route():
    for level in logging.Level:
        logging.log(level, "kv-python", f"a {level.name.lower()} line")
    print("warning: this one went to stderr", file=sys.stderr)
    return 200, b"logged\n"


def route(method: str, target: str, request: IncomingRequest):
    url = urlsplit(target)
    parts = [unquote(p) for p in url.path.split("/") if p]
    query = parse_qs(url.query)
    if not parts:
        return 404, b"no such route\n"
    if parts[0] == "kv" and len(parts) >= 2:
        return store_route(method, parts[1:], query, request)
    if parts[0] == "batch" and len(parts) == 2:
        return batch_route(method, parts[1], query, request)
    if parts[0] == "config" and method == "GET":
        return config_route(parts[1:])
    if parts[0] == "log":
        return log_route()
    return 404, b"no such route\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = method_name(request.method())
        target = request.path_with_query() or "/"
        logging.log(logging.Level.INFO, "kv-python", f"{method} {target}")
        try:
            status, body = route(method, target, request)
        except Err as e:
            if isinstance(e.value, kv.Error_AccessDenied):
                status, body = 403, b"access denied\n"
            elif isinstance(e.value, kv.Error_NoSuchStore):
                status, body = 404, b"no such store\n"
            elif isinstance(e.value, kv.Error_Other):
                status, body = 500, f"store error: {e.value.value}\n".encode()
            else:
                status, body = 500, f"error: {e.value}\n".encode()
            reason = body.decode().strip()
            logging.log(logging.Level.ERROR, "kv-python", f"{method} {target} failed: {reason}")
        except ValueError as e:
            status, body = 400, f"bad request: {e}\n".encode()
        respond(response_out, status, body)
