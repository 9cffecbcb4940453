"""What a public link needs beyond Gradio's defaults: nosniff on every response, one log line (not a traceback)
for an unknown endpoint, and a 404 for it instead of a 500; a sentence for an input URL that Gradio will not fetch
(loopback, private addresses: safehttpx refuses them) and for a full disk; no partial file left in the upload folder
by a client that goes away mid-upload (tests/test_faults.py)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

from fastapi.responses import JSONResponse
from gradio import processing_utils, route_utils
from gradio.blocks import Blocks
from gradio.exceptions import Error
from gradio.route_utils import FnIndexInferError  # gradio is pinned: this internal name is checked by a test
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect

logger = logging.getLogger("parkclf.app")
# Where Gradio looks an event up by a name or number the caller chose.
API_PATHS = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")
GRADIO_SWEEP = route_utils.delete_files_created_by_app  # Gradio's own, before sweep_cache replaces it
URL_REFUSED = "That address cannot be fetched; send the image itself or a public URL."
INPUT_REFUSED = "The image could not be received; send the file itself or a public http(s) URL."
DISK_FULL = ("The server's disk is full right now, so the photo could not be received; please try again in a few "
             "minutes.")


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


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


async def disk_full(request, exc):
    """A full disk under Gradio's upload folder: a 507 with a sentence and one log line, and the server goes on."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise exc
    logger.warning("%s %s: the disk is full (%s)", request.method, request.url.path, exc)
    return JSONResponse({"detail": DISK_FULL}, status_code=507)


async def client_gone(request, exc):
    logger.info("%s %s: the client went away mid-request", request.method, request.url.path)
    return JSONResponse({"detail": "The request was not received in full."}, status_code=400)


def sweep_cache(blocks, age: float | None) -> None:
    """Gradio's periodic cache sweep (``delete_cache``), made safe under load. Gradio's own iterates each set of
    temporary files while uploads add to it from the event loop (the sweep runs in a worker thread): "Set changed
    size during iteration" ends its ``while True`` task, and from then on nothing is ever deleted (the soak of
    issue 33: 2,800 files and 20 GB kept in 30 minutes). This one sweeps a copy of each set, and a file it cannot
    delete costs one log line, not the sweep."""
    keep = set()
    for component in list(blocks.blocks.values()):
        keep.update(getattr(component, "keep_in_cache", set()))
    now = time.time()
    for temp_set in list(blocks.temp_file_sets):
        for file in temp_set.copy():  # one C call: an upload arriving meanwhile waits for it, and is kept
            if file in keep:
                continue
            try:
                if age is None or now - Path(file).lstat().st_ctime > age:
                    os.remove(file)
                    temp_set.discard(file)
            except FileNotFoundError:
                temp_set.discard(file)
            except OSError as e:
                logger.warning("the cache sweep could not delete %s: %s", file, first_line(e))


def _guard_gradio() -> None:
    """Replace Gradio's cache sweep (:func:`sweep_cache`) and wrap three Gradio steps (attributes Gradio looks up
    at each call; gradio is pinned, and tests/test_faults.py checks each behaviour):

    - fetching an input URL: whatever safehttpx refuses (loopback, private, link-local addresses) or cannot fetch
      reaches the caller as URL_REFUSED with one log line, instead of ``{"error": null}`` (MCP: "The upstream Gradio
      app has raised an exception") and a traceback; the empty folder Gradio made for the download goes too;
    - reading the inputs of an event (a FileData that does not validate, a path outside the upload folder):
      INPUT_REFUSED, with one log line;
    - parsing an upload: Gradio deletes its temporary files when the form is malformed, but not when the client
      disconnects or the disk fills, which would leave a partial file in the upload folder per failed upload."""
    if getattr(Blocks.preprocess_data, "guarded", False):
        return
    download, receive, parse = (processing_utils.async_ssrf_protected_download, Blocks.preprocess_data,
                                route_utils.GradioMultiPartParser.parse)

    async def fetch_or_refuse(url: str, cache_dir: str) -> str:
        try:
            return await download(url, cache_dir)
        except Exception as e:
            logger.warning("an input URL was not fetched: %s (%s: %s)", url[:200], type(e).__name__, first_line(e))
            with contextlib.suppress(OSError):
                (Path(cache_dir) / processing_utils.hash_url(url)).rmdir()  # made before the fetch; still empty
            raise Error(URL_REFUSED, print_exception=False) from None

    async def receive_or_refuse(blocks, *args, **kwargs):
        try:
            return await receive(blocks, *args, **kwargs)
        except Error:
            raise
        except Exception as e:
            logger.warning("an input was not received: %s: %s", type(e).__name__, first_line(e))
            raise Error(INPUT_REFUSED, print_exception=False) from None

    async def parse_or_clean(self):
        try:
            return await parse(self)
        except BaseException:
            for f in self._files_to_close_on_error:
                f.close()
                Path(f.name).unlink(missing_ok=True)
            raise

    route_utils.delete_files_created_by_app = sweep_cache
    receive_or_refuse.guarded = True
    processing_utils.async_ssrf_protected_download = fetch_or_refuse
    Blocks.preprocess_data = receive_or_refuse
    route_utils.GradioMultiPartParser.parse = parse_or_clean


def app_kwargs() -> dict:
    """For ``launch(app_kwargs=...)``: reaches the FastAPI app Gradio builds."""
    logging.getLogger("uvicorn.error").addFilter(OneLine())
    _guard_gradio()
    return {"middleware": [Middleware(NoSniff)],
            "exception_handlers": {FnIndexInferError: unknown_endpoint, KeyError: key_error, OSError: disk_full,
                                   ClientDisconnect: client_gone}}
