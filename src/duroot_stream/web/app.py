"""The web view: routes over the public reader API, and server-sent events from `Live`.

/                          the index of workflows (filterable, live)
/workflows/<id>            the du result: treemap, sortable table, status, progress
/workflows/<id>.json       the same as JSON
/workflows/<id>.du         the result as `get` prints it, as a download
/root?root=<global root>   the root's runs that Kafka still keeps; choose two to compare
/compare?a=<id>&b=<id>     two runs compared: per path before, after, change; a treemap
/events, /workflows/<id>/events   server-sent events: one per new workflow event
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from duroot_stream.client import (
    Comparison,
    DuResult,
    DuRootError,
    DuRootReader,
    Unavailable,
    WorkflowNotFound,
    WorkflowStatus,
    compare_workflows,
    runs_of,
)
from duroot_stream.config import KafkaConfig

from . import pages, runs
from .live import Live

HEARTBEAT_S = 15.0  # a comment line this often, so proxies and browsers keep the stream
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


class _Problem(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def create_app(config: KafkaConfig, *, reader: DuRootReader | None = None) -> Starlette:
    """The application; it follows the events topic while it runs (its lifespan)."""
    reader = reader or DuRootReader(config)
    live = Live(reader)

    def unreachable(exc: Unavailable) -> _Problem:
        return _Problem(
            503,
            "Kafka is unreachable",
            f"Cannot read the topics at {config.bootstrap_servers}: {exc}",
        )

    def call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except WorkflowNotFound as exc:
            raise _Problem(404, "No such workflow", str(exc)) from None
        except ValueError as exc:  # not a UUID
            raise _Problem(400, "Bad workflow id", str(exc)) from None
        except Unavailable as exc:
            raise unreachable(exc) from None
        except DuRootError as exc:
            raise _Problem(502, "Cannot read the workflow", str(exc)) from None

    def workflow(wf: str) -> tuple[WorkflowStatus, DuResult]:
        status: WorkflowStatus = call(lambda: reader.status(wf))
        result: DuResult = call(lambda: reader.get_du(status.workflow_id))
        return status, result

    def index(request: Request) -> Response:
        query = request.query_params.get("q", "")
        entries = call(reader.index)
        main = pages.index_main(entries.values(), dict(live.tallies), query)
        if request.query_params.get("part") == "main":
            return HTMLResponse(main)
        banner = f"Kafka: {live.error}" if live.error else ""
        return HTMLResponse(pages.page("Workflows", main, live_src="/events", banner=banner))

    def workflow_page(request: Request) -> Response:
        status, result = workflow(request.path_params["wf"])
        main = pages.workflow_main(status, result)
        if request.query_params.get("part") == "main":
            return HTMLResponse(main)
        src = f"/workflows/{status.workflow_id}/events"
        return HTMLResponse(
            pages.page(status.global_root or status.workflow_id, main, live_src=src)
        )

    def root_page(request: Request) -> Response:
        global_root = request.query_params.get("root", "")
        if not global_root:
            raise _Problem(400, "Which root?", "Give the global root: /root?root=<global root>")
        entries = call(reader.index)
        tallies = dict(live.tallies)
        known = {wf: t.global_root for wf, t in tallies.items() if t.global_root}
        main = runs.root_main(global_root, runs_of(entries.values(), global_root, known), tallies)
        # Not live: a refresh of the table would undo the runs chosen for the comparison.
        return HTMLResponse(pages.page(global_root, main))

    def compare_page(request: Request) -> Response:
        before, after = request.query_params.get("a"), request.query_params.get("b")
        if not before or not after:
            raise _Problem(400, "Which runs?", "Give two workflows: /compare?a=<before>&b=<after>")
        comparison: Comparison = call(lambda: compare_workflows(reader, before, after))
        root = comparison.after.status.global_root
        return HTMLResponse(pages.page(f"{root}: compared", runs.compare_main(comparison)))

    def workflow_json(request: Request) -> Response:
        status, result = workflow(request.path_params["wf"])
        return JSONResponse(
            {
                "workflow_id": status.workflow_id,
                "state": result.state.name,
                "vid": result.vid,
                "complete": result.complete,
                "status_code": result.status_code,
                "status_message": result.status_message,
                "host": status.host,
                "global_root": status.global_root,
                "host_root": status.host_root,
                "registry_id": status.registry_id,
                "started_at_ms": status.started_at_ms,
                "completed_at_ms": status.completed_at_ms,
                "lines": [{"path": p.path, "usage": p.usage} for p in result.lines],
            }
        )

    def workflow_du(request: Request) -> Response:
        status, result = workflow(request.path_params["wf"])
        body = "".join(f"{line.usage} {line.path}\n" for line in result.lines)
        name = f"du-{status.workflow_id}.txt"
        return PlainTextResponse(
            body, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    async def events(request: Request) -> Response:
        wf = request.path_params.get("wf")
        if wf is not None:
            wf = call(lambda: str(uuid.UUID(wf)))
        return StreamingResponse(
            _stream(live, wf), media_type="text/event-stream", headers=_NO_CACHE
        )

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise _Problem(404, "Not found", name)
        text = resources.files(__package__).joinpath("static", name).read_text()
        return Response(text, media_type=STATIC[name])

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Problem)
        if request.url.path.endswith(".json"):
            return JSONResponse({"error": exc.title, "message": exc.message}, exc.status)
        return HTMLResponse(pages.error_page(exc.title, exc.message), exc.status)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        live.start()
        try:
            yield
        finally:
            await asyncio.to_thread(live.stop)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/root", root_page),
            Route("/compare", compare_page),
            Route("/events", events),
            Route("/static/{name}", static),
            Route("/workflows/{wf}.json", workflow_json),
            Route("/workflows/{wf}.du", workflow_du),
            Route("/workflows/{wf}/events", events),
            Route("/workflows/{wf}", workflow_page),
        ],
        exception_handlers={_Problem: problem},
        lifespan=lifespan,
    )
    app.state.live = live
    return app


_NO_CACHE = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _stream(live: Live, workflow_id: str | None) -> AsyncIterator[str]:
    """`ready` once subscribed (the page fetches itself again: nothing falls in between),
    then one message per new event."""
    sub = live.subscribe(workflow_id)
    try:
        yield 'event: message\ndata: {"kind": "ready"}\n\n'
        while True:
            try:
                notice = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if notice is None:
                return
            yield f"data: {json.dumps(notice.as_json())}\n\n"
    finally:
        live.unsubscribe(sub)
