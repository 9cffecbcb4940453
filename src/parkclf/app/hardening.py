"""What a public link needs beyond Gradio's defaults: nosniff on every response, one log line (not a traceback)
for an unknown endpoint, and a 404 for it instead of a 500."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from gradio.route_utils import FnIndexInferError  # gradio is pinned: this internal name is checked by a test
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

logger = logging.getLogger("parkclf.app")
# Where Gradio looks an event up by a name or number the caller chose.
API_PATHS = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")


class NoSniff:
    """Pure ASGI middleware (so it also covers file responses and event streams): browsers must not guess a served
    file's type from its bytes (an uploaded "photo" that is really HTML stays inert)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-content-type-options"]
                message["headers"] = [*headers, (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def unknown_endpoint(request, exc):
    logger.warning("unknown endpoint: %s %s (%s: %s)", request.method, request.url.path, type(exc).__name__, exc)
    return JSONResponse({"detail": "Unknown endpoint"}, status_code=404)


async def key_error(request, exc):
    if request.url.path.startswith(API_PATHS):  # an fn_index or api_name that does not exist
        return await unknown_endpoint(request, exc)
    raise exc


class OneLine(logging.Filter):
    """uvicorn logs a 70-line traceback for each exception a route re-raises. For the ones a stranger can cause at
    will (an unknown event id, a poll of an unknown session), one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        e = record.exc_info[1] if record.exc_info else None
        if e is not None and str(record.msg).startswith("Exception in ASGI application") and (
                isinstance(e, (KeyError, FnIndexInferError))
                or (isinstance(e, RuntimeError) and isinstance(e.__cause__, StarletteHTTPException))):
            record.msg, record.args = "Exception in ASGI application: %s: %s", (type(e).__name__, e)
            record.exc_info, record.exc_text = None, None
        return True


def app_kwargs() -> dict:
    """For ``launch(app_kwargs=...)``: reaches the FastAPI app Gradio builds."""
    logging.getLogger("uvicorn.error").addFilter(OneLine())
    return {"middleware": [Middleware(NoSniff)],
            "exception_handlers": {FnIndexInferError: unknown_endpoint, KeyError: key_error}}
