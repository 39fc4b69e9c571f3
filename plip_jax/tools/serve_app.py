"""The person-search web app (FastAPI): the page, its JSON API over a SearchService, and the guards
that turn every bad request into a status and a one-line JSON message, never a dead process.

    GET  /                       the page (plain HTML/JS/CSS from plip_jax/tools/web/)
    GET  /api/info               gallery size, index kind, model
    GET  /api/search?q=TEXT&k=N  text query
    POST /api/search/image       multipart: file `image`, field `k`
    GET  /api/search/gallery?path=REL&k=N   a gallery crop as the query (itself left out)
    GET  /image/REL              a gallery image (only indexed files inside the folder)

Searches run in the server's thread pool, so concurrent requests are served side by side. (No
`from __future__ import annotations` here: FastAPI reads the handlers' annotations at run time.)
"""

import sys
from pathlib import Path

from plip_jax.tools.gallery_service import MAX_UPLOAD_BYTES, SearchError, SearchService

WEB_DIR = Path(__file__).resolve().parent / "web"
FORM_SLACK = 64 << 10  # multipart headers and the `k` field around an upload
UPLOAD_PATH = "/api/search/image"


class UploadTooLarge(Exception):
    """The request body of an upload went past the limit while it was being read."""


class BodyLimit:
    """ASGI middleware: an upload whose body exceeds `limit` bytes gets 413 before it is all read."""

    def __init__(self, app, limit: int, path: str = UPLOAD_PATH):
        self.app, self.limit, self.path = app, limit, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            from starlette.responses import JSONResponse

            return await JSONResponse(_too_large(int(length)), status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if seen > self.limit:
                raise UploadTooLarge(seen)
            return message

        return await self.app(scope, limited, send)


def _too_large(size: int) -> dict:
    return {"detail": f"upload too large: {size} bytes or more, at most {MAX_UPLOAD_BYTES} bytes"}


def create_app(service: SearchService):
    """The FastAPI app serving `service` and the page."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.staticfiles import StaticFiles

    app = FastAPI(title="PLIP person search", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_UPLOAD_BYTES + FORM_SLACK)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(SearchError)
    async def _search_error(request: Request, e: SearchError):
        return error(e.status, e.message)

    @app.exception_handler(UploadTooLarge)
    async def _upload_too_large(request: Request, e: UploadTooLarge):
        return JSONResponse(_too_large(int(e.args[0])), status_code=413)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException):
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        return error(400, "; ".join(str(x.get("msg", x)) for x in e.errors())[:300] or "bad request")

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):  # the process lives on; the request gets a 500
        print(f"error: {request.method} {request.url.path}: {type(e).__name__}: {e}".splitlines()[0],
              file=sys.stderr, flush=True)
        return error(500, f"internal error ({type(e).__name__}); the server keeps running")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    def info():
        return service.info()

    @app.get("/api/search")
    def search_text(q: str | None = None, k: str | None = None):
        return service.search_text(q, k)

    @app.get("/api/search/gallery")
    def search_gallery(path: str | None = None, k: str | None = None):
        return service.search_gallery_image(path, k)

    @app.post(UPLOAD_PATH)
    async def search_image(request: Request):
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise SearchError(400, "send the image as a multipart file field named 'image'")
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
            name = (upload.filename or "upload")[:120]
            k = form.get("k")
            return await run_in_threadpool(service.search_upload, data, k if isinstance(k, str) else None, name)
        finally:
            await form.close()

    @app.get("/image/{path:path}")
    def image(path: str):
        return FileResponse(service.image_file(path), headers={"Cache-Control": "max-age=3600"})

    return app
