#!/usr/bin/env python3
"""A small MCP server for ossa's tests, written against the MCP specification with the Python
standard library only (so it shares no code with the Rust client under test).

    mcp_echo_server.py [--name NAME]          speak MCP on stdin/stdout (newline-delimited JSON-RPC)
    mcp_echo_server.py --http [--name NAME]   serve streamable HTTP on 127.0.0.1, an ephemeral port,
                                              printing "listening on PORT" to stdout when ready
    ... --hostile-schemas                     also list `deep` and `cyclic` (below)

Tools: echo, add (structured result), fail (isError result), reject (JSON-RPC error), crash
(the process exits mid-call), pid (the process id, to observe restarts), slow, whereami (working
directory and environment), files.read (a name
with a dot), describe_user (a pydantic-style schema with titles, $defs and anyOf), environment
(the server's whole environment as JSON), big (a result of any size), flood (a result that never
ends: one line of JSON-RPC growing without end). With --hostile-schemas: deep (a schema whose
$defs reference the next level twice, 18 levels: 2^18 copies when expanded) and cyclic (two
$defs referencing each other).
"""

import json
import os
import sys
import threading
import time

NAME = "echo"
PROTOCOL = "2025-06-18"
HOSTILE = False


def tool(name, description, properties=None, required=None, **more):
    """A tool whose input is an object with `properties` (those in `required` required)."""
    schema = {"type": "object", "properties": properties or {}}
    if required is not None:
        schema["required"] = required
    schema.update(more)
    return {"name": name, "description": description, "inputSchema": schema}


TOOLS = [
    tool(
        "echo",
        "Returns the text it was given.",
        {"text": {"type": "string", "description": "What to echo."}},
        ["text"],
    ),
    tool(
        "add",
        "Adds two integers.",
        {"a": {"type": "integer"}, "b": {"type": "integer"}},
        ["a", "b"],
        additionalProperties=False,
    ),
    tool("fail", "Always reports a tool error.", {"message": {"type": "string"}}),
    tool("reject", "Answers with a JSON-RPC error."),
    tool("crash", "Exits the server process in the middle of the call."),
    tool("pid", "Returns the server's process id."),
    tool("slow", "Sleeps before answering.", {"seconds": {"type": "number"}}, ["seconds"]),
    tool("whereami", "Reports the working directory and OSSA_TEST_VAR."),
    tool("files.read", "Pretends to read a file.", {"path": {"type": "string"}}, ["path"]),
    tool("environment", "Returns the server's environment variables as a JSON object."),
    tool(
        "big",
        "Returns `unit` repeated `count` times.",
        {"unit": {"type": "string"}, "count": {"type": "integer"}, "error": {"type": "boolean"}},
        ["unit", "count"],
    ),
    tool(
        "flood",
        "Starts a result and keeps writing it, `megabytes` MiB (over stdio only).",
        {"megabytes": {"type": "integer"}},
        ["megabytes"],
    ),
    {
        "name": "describe_user",
        "description": "Describes a user.",
        "inputSchema": {
            "$defs": {
                "Address": {
                    "title": "Address",
                    "type": "object",
                    "properties": {"city": {"title": "City", "type": "string"}},
                    "required": ["city"],
                }
            },
            "title": "describe_userArguments",
            "type": "object",
            "properties": {
                "name": {"title": "Name", "type": "string", "description": "Full name."},
                "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": None},
            },
            "required": ["name"],
        },
    },
]


DEEP_LEVELS = 18


def deep_schema(levels):
    """Level i is an object whose two properties are both level i + 1; the last is a string."""
    defs = {}
    for level in range(levels):
        below = {"$ref": f"#/$defs/L{level + 1}"}
        defs[f"L{level}"] = {"type": "object", "properties": {"left": below, "right": below}}
    defs[f"L{levels}"] = {"type": "string"}
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/L0"}}, "$defs": defs}


HOSTILE_TOOLS = [
    {
        "name": "deep",
        "description": "Takes a binary tree 18 levels deep.",
        "inputSchema": deep_schema(DEEP_LEVELS),
    },
    {
        "name": "cyclic",
        "description": "Takes two types that contain each other.",
        "inputSchema": {
            "type": "object",
            "properties": {"start": {"$ref": "#/$defs/A"}},
            "$defs": {
                "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
                "B": {
                    "type": "object",
                    "properties": {"a": {"$ref": "#/$defs/A"}, "name": {"type": "string"}},
                },
            },
        },
    },
]


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def text_result(text, **extra):
    result = {"content": [{"type": "text", "text": text}]}
    result.update(extra)
    return result


def call_tool(name, args):
    if name == "echo":
        return text_result(f"{NAME}: {args.get('text', '')}")
    if name == "add":
        total = args["a"] + args["b"]
        return {"content": [], "structuredContent": {"sum": total}}
    if name == "fail":
        return text_result(args.get("message", "it failed"), isError=True)
    if name == "reject":
        raise RpcError(-32602, "reject always rejects", {"hint": "do not call reject"})
    if name == "crash":
        sys.stderr.write(f"{NAME}: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if name == "pid":
        return text_result(str(os.getpid()))
    if name == "slow":
        time.sleep(float(args["seconds"]))
        return text_result("done")
    if name == "whereami":
        return text_result(f"{os.getcwd()} {os.environ.get('OSSA_TEST_VAR', '-')}")
    if name == "environment":
        return text_result(json.dumps(dict(os.environ), sort_keys=True))
    if name == "big":
        return text_result(args["unit"] * args["count"], isError=bool(args.get("error")))
    if name in ("deep", "cyclic"):
        return text_result(f"{name}: {json.dumps(args, sort_keys=True)}")
    if name == "files.read":
        return text_result(f"contents of {args['path']}")
    if name == "describe_user":
        city = (args.get("address") or {}).get("city", "nowhere")
        return {
            "content": [
                {"type": "text", "text": f"{args['name']} lives in {city}"},
                {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "mem://note", "mimeType": "text/plain", "text": "a note"}},
            ]
        }
    raise RpcError(-32602, f"Unknown tool: {name}")


def handle(message):
    """The JSON-RPC response to one message, or None for notifications and responses."""
    if "method" not in message:
        return None
    method, msg_id = message["method"], message.get("id")
    if msg_id is None:
        return None
    params = message.get("params") or {}
    try:
        if method == "initialize":
            result = {
                "protocolVersion": PROTOCOL,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": NAME, "version": "1.0.0"},
            }
        elif method == "ping":
            result = {}
        elif method == "tools/list":
            result = {"tools": TOOLS + (HOSTILE_TOOLS if HOSTILE else [])}
        elif method == "tools/call":
            result = call_tool(params.get("name"), params.get("arguments") or {})
        else:
            raise RpcError(-32601, f"Method not found: {method}")
        return {"jsonrpc": "2.0", "id": msg_id, "result": result}
    except RpcError as error:
        body = {"code": error.code, "message": error.message}
        if error.data is not None:
            body["data"] = error.data
        return {"jsonrpc": "2.0", "id": msg_id, "error": body}


def flood_parts(message):
    """One JSON-RPC response whose text goes on for `megabytes` MiB, in pieces: the client must
    stop reading it, not hold it."""
    head = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"content": []}})
    yield head[: -len("[]}}")] + '[{"type": "text", "text": "'
    chunk = "x" * (1 << 20)
    for _ in range(message["params"]["arguments"]["megabytes"]):
        yield chunk
    yield '"}]}}'


def is_flood(message):
    return message.get("method") == "tools/call" and (message.get("params") or {}).get("name") == "flood"


def serve_stdio():
    lock = threading.Lock()

    def answer(message):
        response = handle(message)
        if response is not None:
            with lock:
                sys.stdout.write(json.dumps(response) + "\n")
                sys.stdout.flush()

    def flood(message):
        with lock:
            try:
                for part in flood_parts(message):
                    sys.stdout.write(part)
                sys.stdout.write("\n")
                sys.stdout.flush()
            except OSError:
                os._exit(0)

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        message = json.loads(line)
        if is_flood(message):
            threading.Thread(target=flood, args=(message,), daemon=True).start()
            continue
        # Calls run concurrently, as a real server's would.
        threading.Thread(target=answer, args=(message,), daemon=True).start()


def serve_http():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    session = "session-" + str(os.getpid())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status, body=b"", content_type=None, headers=()):
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            # No server-initiated stream: allowed by the specification.
            self.send(405)

        def do_DELETE(self):
            self.send(200)

        def do_POST(self):
            if self.path != "/mcp":
                self.send(404)
                return
            length = int(self.headers.get("Content-Length", "0"))
            message = json.loads(self.rfile.read(length))
            is_initialize = message.get("method") == "initialize"
            if not is_initialize and self.headers.get("Mcp-Session-Id") != session:
                self.send(400, b"missing or wrong Mcp-Session-Id", "text/plain")
                return
            if is_flood(message):
                # A server-sent event that never ends, on a connection closed at the end.
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    self.wfile.write(b"event: message\ndata: ")
                    for part in flood_parts(message):
                        self.wfile.write(part.encode())
                    self.wfile.write(b"\n\n")
                except OSError:
                    pass
                return
            response = handle(message)
            if response is None:
                self.send(202)
                return
            headers = [("Mcp-Session-Id", session)] if is_initialize else []
            body = json.dumps(response)
            if message.get("method") == "tools/call":
                # Answer tool calls as a server-sent event stream, everything else as JSON:
                # both are allowed, and the client must read both.
                event = f"event: message\ndata: {body}\n\n".encode()
                self.send(200, event, "text/event-stream", headers)
            else:
                self.send(200, body.encode(), "application/json", headers)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--name" in args:
        NAME = args[args.index("--name") + 1]
    HOSTILE = "--hostile-schemas" in args
    if "--http" in args:
        serve_http()
    else:
        serve_stdio()
