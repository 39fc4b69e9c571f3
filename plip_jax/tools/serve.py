"""Person search in the browser: index a folder of crops with a PLIP checkpoint and serve a page over it.

    python -m plip_jax.serve --checkpoint PATH --images DIR [--host 127.0.0.1] [--port 8000]

Indexing is plip_jax.search's (embeddings cached in DIR/.plip_search, refreshed per changed file,
with a progress bar). Galleries larger than --exact-max are ranked by a faiss IVF index stored beside
that cache and rebuilt when the embeddings change; smaller ones exactly. The page (text box, top-k
grid, click a crop to search by it, upload a crop) and its JSON API are in plip_jax.tools.serve_app.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from plip_jax.tools.vector_index import EXACT_MAX, KINDS


def _parser() -> argparse.ArgumentParser:
    from plip_jax.core.cli import ArgumentParser, add_debug_flag
    from plip_jax.tools.search import add_index_arguments, add_model_arguments

    p = ArgumentParser(prog="python -m plip_jax.serve", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument("--index", choices=KINDS, default="auto",
                   help="ranking: exact, ivf (faiss ANN), or auto (exact up to --exact-max images)")
    p.add_argument("--exact-max", type=int, default=EXACT_MAX, help="largest gallery ranked exactly under auto")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists probed per query (default nlist/4)")
    add_index_arguments(p)
    p.add_argument("--access-log", action="store_true", help="print a line per request")
    add_debug_flag(p)
    return p


def describe_model(checkpoint: str, model: Any) -> tuple[str, str]:
    """A short model name for the page (the checkpoint's folder or file name) and its architecture."""
    path = Path(checkpoint).resolve()
    name = path.parent.parent.name if path.name.isdigit() and path.parent.name == "checkpoints" else path.name
    img, txt = model.config["image"], model.config["text"]
    h, w = model.input_size
    detail = (f"{model.recipe}; ResNet {tuple(img['layers'])} width {img['width']} at {h}x{w}; "
              f"text {txt.get('num_hidden_layers', '?')} layers x {txt.get('hidden_size', '?')}; "
              f"{img['output_dim']}-d embeddings")
    return name, detail


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError with the address when it cannot be had)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_server(app: Any, sock: socket.socket, access_log: bool = False) -> None:
    """Serve `app` with uvicorn on an already listening socket until Ctrl-C / SIGTERM."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=access_log, timeout_keep_alive=5,
                            limit_concurrency=256)
    uvicorn.Server(config).run(sockets=[sock])


def _missing_extra() -> str | None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart", "faiss") if importlib.util.find_spec(m) is None]
    if missing:
        return f"the server needs {', '.join(missing)}: pip install -e \".[serve]\""
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.batch_size < 1 or args.exact_max < 0 or (args.nprobe is not None and args.nprobe < 1):
        raise ValueError("--batch-size and --nprobe must be >= 1, --exact-max >= 0")
    if not Path(args.images).is_dir():
        raise ValueError(f"--images {args.images}: not a directory")
    problem = _missing_extra()
    if problem:
        raise ValueError(problem)
    sock = listen(args.host, args.port)  # before the slow part: a taken port fails at once

    from plip_jax.api import from_pretrained
    from plip_jax.tools.gallery_service import SearchService, inside_only
    from plip_jax.tools.search import index_folder
    from plip_jax.tools.serve_app import create_app
    from plip_jax.tools.vector_index import open_index

    try:
        model = from_pretrained(args.checkpoint, recipe=args.recipe)
    except Exception as e:  # any load failure is one line for the user
        from plip_jax.core.cli import reraise_if_debug

        reraise_if_debug()
        line = f"cannot load --checkpoint {args.checkpoint}: {type(e).__name__}: {e}".splitlines()[0]
        raise ValueError(line) from None
    progress = not args.no_progress and os.environ.get("PLIP_NO_PROGRESS") != "1"
    gallery = index_folder(model, args.images, cache=not args.no_cache, cache_dir=args.cache_dir,
                           batch_size=args.batch_size, progress=progress)
    gallery, outside = inside_only(gallery)
    print(f"{len(gallery.paths)} images ({gallery.num_cached} from cache, {gallery.num_embedded} embedded), "
          f"{len(gallery.skipped)} unreadable files skipped"
          + (f" ({outside} symlinks leaving the folder)" if outside else ""), flush=True)
    if not gallery.paths:
        sock.close()
        print(f"error: no readable images under {args.images}", file=sys.stderr)
        return 2
    index = open_index(gallery.embeddings, gallery.paths, args.index, cache_file=gallery.cache_file,
                       exact_max=args.exact_max, nprobe=args.nprobe)
    name, detail = describe_model(args.checkpoint, model)
    service = SearchService.from_gallery(model, gallery, index, model_name=name, model_detail=detail)
    service.warm_up()
    if not _is_loopback(args.host):
        print(f"note: listening on {args.host}: anyone who can reach this machine can search {args.images}",
              file=sys.stderr)
    print(f"serving {len(gallery.paths)} images ({index.kind} index, model {name}) at {_url(sock)}  "
          "(Ctrl-C stops)", flush=True)
    run_server(create_app(service), sock, access_log=args.access_log)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """`python -m plip_jax.serve`: main() with known faults as one `error:` line (plip_jax.core.cli)."""
    from plip_jax.core.checkpoint import CheckpointError
    from plip_jax.core.cli import run_cli

    return run_cli(main, argv, known=(CheckpointError,))


if __name__ == "__main__":
    sys.exit(cli())
