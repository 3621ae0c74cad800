#!/usr/bin/env python3
"""An MCP server for agent-server's MCP tests (tests/api/mcp.rs).

It offers a few small tools whose annotations cover the cases agent-server
treats differently (read-only, destructive, idempotent, none at all), writes
what it does to a ledger file so that a test can see which calls really ran,
and can misbehave on purpose (--mode) to test failure handling.

    fixture_server.py stdio [--ledger FILE] [--mode MODE]
    fixture_server.py http --port PORT [--ledger FILE] [--mode MODE]
                           [--require-header NAME:VALUE]

`http` serves the Streamable HTTP transport at /mcp on 127.0.0.1; PORT 0
picks a free port. Once it accepts connections it prints `listening on PORT`
as its first line on stdout.

Modes: normal; exit (exit 3 at once); hang (never answer anything; over
stdio it still exits at end of input); hang-tools (every tools/call hangs);
list-changed (the first `lookup` call adds the tool `extra` and sends
notifications/tools/list_changed). Over stdio, end of input also cancels the
tool calls still running, so a killed client leaves a `start` line without
its `done`.

Ledger lines, one per event, each flushed and fsync'd before the server goes
on, so that a test that has just killed agent-server can read them at once:
    traceparent VALUE|-          every HTTP request, refused ones too (http only)
    delete_item ID
    set_flag NAME true|false
    slow_delete start ID / slow_delete done ID
    slow_set start NAME / slow_set done NAME / slow_set cancelled NAME
    hang TOOL                    a tools/call that will never answer (hang-tools)

It is built on the low-level server of the official MCP Python SDK rather
than on MCPServer, so that the input schemas are written out here (and the
tests can assert them exactly, whatever pydantic would generate) and the
tools.listChanged capability can be declared.
"""

import argparse
import os
import sys

MODES = ("normal", "exit", "hang", "hang-tools", "list-changed")


def parse_args():
    parser = argparse.ArgumentParser(description="MCP server for agent-server's tests")
    transports = parser.add_subparsers(dest="transport", required=True)
    for name in ("stdio", "http"):
        sub = transports.add_parser(name)
        sub.add_argument("--ledger", help="file to append a line to for each side effect")
        sub.add_argument("--mode", choices=MODES, default="normal")
        if name == "http":
            sub.add_argument("--port", type=int, required=True, help="0 picks a free port")
            sub.add_argument(
                "--require-header",
                metavar="NAME:VALUE",
                help="answer 401 to requests without this header and value",
            )
    return parser.parse_args()


ARGS = parse_args()
# Before anything slow (importing the SDK takes a moment), so that even the
# `exit` mode leaves this line in agent-server's logs.
print(f"fixture: started ({ARGS.mode})", file=sys.stderr, flush=True)

if ARGS.mode == "exit":
    # A server that dies at start, before reading a byte.
    sys.exit(3)

if ARGS.transport == "stdio" and ARGS.mode == "hang":
    # Reads (so the client's writes never block) but never answers, not even
    # initialize. It ends at end of input so that a test run leaves no
    # process behind once agent-server closes its side.
    while sys.stdin.buffer.read(65536):
        pass
    sys.exit(0)

import anyio  # noqa: E402  (after the early exits above, which must not wait for imports)
import mcp_types as types  # noqa: E402
from mcp.server import NotificationOptions, Server  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

LEDGER = ARGS.ledger


def ledger(line):
    """Appends one line to the ledger, on disk before returning.

    O_APPEND and a single write keep lines whole when several fixture
    processes (a restarted stdio server, concurrent HTTP requests) share the
    file.
    """
    if LEDGER is None:
        return
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class BadArguments(Exception):
    pass


def argument(arguments, name, kind):
    """The argument `name`, checked against its schema type by hand (the
    low-level server does not validate arguments), so that a bad call is a
    tool error the model can read rather than a crash."""
    value = arguments.get(name)
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    else:  # a non-negative number of seconds; bool is an int in Python
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if not ok:
        raise BadArguments(f"invalid arguments: `{name}` must be a {kind}")
    return value


def schema(properties):
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


STRING_ID = {"type": "string", "description": "Identifier of the item."}
SECONDS = {"type": "number", "minimum": 0, "description": "How long to take, in seconds."}


async def lookup(arguments):
    return f"value of {argument(arguments, 'key', 'string')}"


async def delete_item(arguments):
    item = argument(arguments, "id", "string")
    ledger(f"delete_item {item}")
    return f"deleted {item}"


async def set_flag(arguments):
    name = argument(arguments, "name", "string")
    value = "true" if argument(arguments, "value", "boolean") else "false"
    ledger(f"set_flag {name} {value}")
    return f"flag {name} = {value}"


async def slow_delete(arguments):
    item = argument(arguments, "id", "string")
    seconds = argument(arguments, "seconds", "number")
    ledger(f"slow_delete start {item}")
    await anyio.sleep(seconds)
    ledger(f"slow_delete done {item}")
    return f"slowly deleted {item}"


async def slow_set(arguments):
    name = argument(arguments, "name", "string")
    seconds = argument(arguments, "seconds", "number")
    ledger(f"slow_set start {name}")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        # The client's notifications/cancelled (or end of input) got here.
        ledger(f"slow_set cancelled {name}")
        raise
    ledger(f"slow_set done {name}")
    return f"slowly set {name}"


async def fail(arguments):
    raise RuntimeError("fixture failure")


async def extra(arguments):
    return "extra!"


def tool(name, description, input_schema, run, **hints):
    annotations = types.ToolAnnotations(**hints) if hints else None
    definition = types.Tool(name=name, description=description, input_schema=input_schema, annotations=annotations)
    return name, (definition, run)


# Annotations are given in full (not left to the spec's defaults) so that each
# tool is unambiguous; `fail` has none, the case of a server that says nothing.
TOOLS = dict(
    [
        tool(
            "lookup",
            "Looks up a key and returns its value. Reads only; changes nothing.",
            schema({"key": {"type": "string", "description": "The key to look up."}}),
            lookup,
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        tool(
            "delete_item",
            "Deletes an item for good. Calling it twice deletes twice.",
            schema({"id": STRING_ID}),
            delete_item,
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),
        tool(
            "set_flag",
            "Sets a named flag to true or false. Setting it again to the same value changes nothing.",
            schema(
                {
                    "name": {"type": "string", "description": "Name of the flag."},
                    "value": {"type": "boolean", "description": "The value to set."},
                }
            ),
            set_flag,
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        tool(
            "slow_delete",
            "Deletes an item for good, taking the given number of seconds. Calling it twice deletes twice.",
            schema({"id": STRING_ID, "seconds": SECONDS}),
            slow_delete,
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),
        tool(
            "slow_set",
            "Sets a named flag, taking the given number of seconds. Setting it again changes nothing.",
            schema({"name": {"type": "string", "description": "Name of the flag."}, "seconds": SECONDS}),
            slow_set,
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        tool(
            "fail",
            "Always fails, with the error `fixture failure`.",
            schema({}),
            fail,
        ),
    ]
)

# Added by the first `lookup` call in list-changed mode.
_, EXTRA = tool(
    "extra",
    "Appears after the first lookup; returns `extra!`.",
    schema({}),
    extra,
    read_only_hint=True,
    destructive_hint=False,
    idempotent_hint=True,
    open_world_hint=False,
)


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[definition for definition, _ in TOOLS.values()])


def text_result(text, is_error=False):
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)


async def call_tool(ctx, params):
    if ARGS.mode == "hang-tools":
        ledger(f"hang {params.name}")
        await anyio.sleep_forever()
    entry = TOOLS.get(params.name)
    if entry is None:
        # The spec's way to refuse an unknown tool: a protocol error, not a tool error.
        raise MCPError(types.INVALID_PARAMS, f"unknown tool: {params.name}")
    try:
        text = await entry[1](params.arguments or {})
    except Exception as error:  # every failure of a tool is a tool error (isError), as the spec asks
        return text_result(str(error), is_error=True)
    if ARGS.mode == "list-changed" and params.name == "lookup" and "extra" not in TOOLS:
        TOOLS["extra"] = EXTRA
        # Tied to this request: over HTTP it then travels on this POST's event
        # stream, which every client reads, rather than on the optional GET
        # stream a client may not have opened; over stdio it makes no difference.
        await ctx.session.send_notification(types.ToolListChangedNotification(), related_request_id=ctx.request_id)
    return text_result(text)


class FixtureServer(Server):
    def create_initialization_options(self, notification_options=None, *args, **kwargs):
        # The HTTP session manager builds the initialize answer from this
        # method's defaults, so the listChanged capability is declared here,
        # for both transports, and only in the mode that sends the notification.
        notification_options = NotificationOptions(tools_changed=ARGS.mode == "list-changed")
        return super().create_initialization_options(notification_options, *args, **kwargs)


SERVER = FixtureServer("agent-server-mcp-fixture", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio():
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await SERVER.run(read_stream, write_stream, SERVER.create_initialization_options())


class Gate:
    """ASGI middleware in front of the MCP app: writes each request's
    traceparent to the ledger, hangs in `hang` mode, and refuses requests
    without the required header."""

    def __init__(self, app, required):
        self.app = app
        self.required = required

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        ledger(f"traceparent {headers.get('traceparent', '-')}")
        if ARGS.mode == "hang":
            await anyio.sleep_forever()
        if self.required is not None:
            name, value = self.required
            if headers.get(name) != value:
                body = f"missing or wrong {name} header\n".encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve_http():
    import uvicorn

    required = None
    if ARGS.require_header is not None:
        name, sep, value = ARGS.require_header.partition(":")
        if not sep or not name.strip():
            sys.exit("fixture: --require-header wants NAME:VALUE")
        required = (name.strip().lower(), value.strip())

    # The MCP app's lifespan runs the HTTP session manager; `hang` needs none.
    mcp_app = None if ARGS.mode == "hang" else SERVER.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")

    class ListeningServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                # Reported once the socket accepts connections, and read from
                # the socket itself, so that --port 0 tells the test its port.
                port = self.servers[0].sockets[0].getsockname()[1]
                print(f"listening on {port}", flush=True)

    config = uvicorn.Config(
        Gate(mcp_app, required),
        host="127.0.0.1",
        port=ARGS.port,
        lifespan="off" if mcp_app is None else "on",
        # Only problems reach stderr (agent-server's logs), not every request.
        log_level="warning",
        access_log=False,
        # Open event streams (or hung requests) would otherwise hold a
        # SIGTERM'd server up for ever.
        timeout_graceful_shutdown=1,
    )
    ListeningServer(config).run()


if ARGS.transport == "stdio":
    anyio.run(serve_stdio)
else:
    serve_http()
