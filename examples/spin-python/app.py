# A Spin application component written with Spin's Python SDK (spin-sdk 3.x), unchanged from how it
# would run under `spin up`: each path exercises one of Spin's host interfaces.
import json
from urllib.parse import parse_qs, urlparse

from spin_sdk import http, key_value, postgres, redis, variables
from spin_sdk.http import Request, Response
from spin_sdk.wit.imports import atomics, batch, llm, wasi_config_store, wasi_keyvalue_store
# spin-sdk 3.4.1's own `spin_sdk.sqlite` expects a binding name componentize-py 0.17 does not generate;
# the generated module is the same interface (fermyon:spin/sqlite@2.0.0).
from spin_sdk.wit.imports import fermyon_spin_sqlite as sqlite
from spin_sdk.wit.imports import spin_postgres_postgres_4_0_0 as pg4
from spin_sdk.wit.imports import spin_sqlite_sqlite as sqlite3
from spin_sdk.wit.imports.rdbms_types import ParameterValue_Int32, ParameterValue_Str
from spin_sdk.wit.imports.redis import RedisParameter_Binary
from spin_sdk.wit.types import Err


def text(status, body):
    return Response(status, {"content-type": "text/plain"}, bytes(body, "utf-8"))


def kv(q):
    with key_value.open(q.get("store", "default")) as store:
        store.set(q["key"], bytes(q["value"], "utf-8"))
        keys = sorted(store.get_keys())
        value = store.get(q["key"]).decode()
        return f"{value} exists={store.exists(q['key'])} keys={','.join(keys)}"


def sql(q):
    db = sqlite.Connection.open(q.get("db", "default"))
    db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)", [])
    db.execute("INSERT INTO notes (body) VALUES (?)", [sqlite.Value_Text(q["body"])])
    result = db.execute("SELECT id, body FROM notes ORDER BY id", [])
    rows = [[v.value for v in row.values] for row in result.rows]
    return json.dumps({"columns": result.columns, "rows": rows})


def sql3(q):
    db = sqlite3.Connection.open(q.get("db", "default"))
    db.execute("CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, name TEXT)", [])
    db.execute("INSERT INTO tags (name) VALUES (?)", [sqlite3.Value_Text(q["name"])])
    return f"rowid={db.last_insert_rowid()} changes={db.changes()}"


def rds(q):
    with redis.open(q["address"]) as conn:
        conn.set("greeting", b"hello")
        got = conn.get("greeting").decode()
        n = conn.incr("counter")
        conn.sadd("colours", ["red", "green"])
        members = sorted(conn.smembers("colours"))
        echoed = [r.value for r in conn.execute("ECHO", [RedisParameter_Binary(b"hi")])]
        return f"{got} counter={n} colours={','.join(members)} echo={echoed[0].decode()}"


def pg(q):
    with postgres.open(q["address"]) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pets (id INT, name TEXT)", [])
        conn.execute(
            "INSERT INTO pets VALUES ($1, $2)",
            [ParameterValue_Int32(int(q["id"])), ParameterValue_Str(q["name"])],
        )
        rows = conn.query("SELECT id, name FROM pets ORDER BY id", [])
        return json.dumps([[v.value for v in row] for row in rows.rows])


def pg_v4(q):
    conn = pg4.Connection.open(q["address"])
    rows = conn.query(
        "SELECT $1::uuid AS id, '{\"a\": 1}'::jsonb AS doc, 12.50::numeric AS price, "
        "DATE '2024-02-29' AS day, ARRAY[1, NULL, 3]::int4[] AS ints",
        [pg4.ParameterValue_Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8")],
    )
    out = {c.name: repr(v.value) for c, v in zip(rows.columns, rows.rows[0])}
    try:
        conn.execute("SELECT * FROM no_such_table", [])
    except Err as e:
        out["error"] = e.value.value.value.code
    return json.dumps(out, sort_keys=True)


def wasi(q):
    # wasi:keyvalue 0.2.0-draft2 and wasi:config at its 2024-09-27 draft, which spin-sdk 3 also imports.
    bucket = wasi_keyvalue_store.open("default")
    bucket.set("n", b"1")
    cas = atomics.Cas.new(bucket, "n")
    bucket.set("n", b"2")  # someone else writes first: the swap must fail
    try:
        atomics.swap(cas, b"3")
        first = "swapped"
    except Err as e:
        first = type(e.value).__name__
        cas = e.value.value
    seen = cas.current().decode()
    atomics.swap(cas, b"3")
    total = atomics.increment(bucket, "count", 5)
    batch.set_many(bucket, [("x", b"1"), ("y", b"2")])
    many = [(k, v.decode() if v else None) for k, v in batch.get_many(bucket, ["x", "nope"])]
    keys = bucket.list_keys(None).keys
    return json.dumps({
        "first": first, "seen": seen, "now": bucket.get("n").decode(), "count": total,
        "many": many, "keys": sorted(keys), "greeting": wasi_config_store.get("greeting"),
    }, sort_keys=True)


def absent(q):
    try:
        llm.infer("llama2-chat", "hi", None)
        return "llm answered"
    except Err as e:
        return f"llm refused: {type(e.value).__name__}"


def files(q):
    # The component's `files`, read-only under / (Spin mounts them the same way).
    with open(q["path"]) as f:
        content = f.read()
    try:
        open(q["path"], "w")
        wrote = "wrote"
    except OSError as e:
        wrote = type(e).__name__
    return f"{content.strip()} write={wrote}"


ROUTES = {"files": files, "kv": kv, "sqlite": sql, "sqlite3": sql3, "redis": rds, "pg": pg, "pg4": pg_v4, "llm": absent,
          "wasi": wasi}


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        url = urlparse(request.uri)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        name = url.path.rstrip("/").rsplit("/", 1)[-1]
        if name == "var":
            try:
                return text(200, variables.get(q["name"]))
            except Err as e:
                return text(404, f"{type(e.value).__name__}: {e.value.value}")
        route = ROUTES.get(name)
        if route is None:
            return text(404, f"no route {url.path}")
        try:
            return text(200, route(q))
        except Err as e:
            return text(500, f"{name} failed: {e.value!r}")
        except OSError as e:
            return text(404, f"{name} failed: {type(e).__name__}")
