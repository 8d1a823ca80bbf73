"""``anyseg serve``: the studio, a web page and REST API, on a local port."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from anyseg.cli.common import PRECISION_HELP, PRECISIONS


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="start the studio: a web page and REST API to segment and track interactively",
        description="Serve the studio on http://HOST:PORT/ (the REST API under /api, its OpenAPI spec at "
        "/openapi.json and /docs). The model loads in the background; official weights are downloaded on "
        "first use, and if they cannot be, the page says which file to download and where to put it.",
    )
    p.add_argument("--model", metavar="NAME", help="registry name (default sam2.1-tiny; `anyseg models` lists them)")
    p.add_argument("--checkpoint", metavar="PATH", help="load weights from this local file instead")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    p.add_argument("--no-download", action="store_true",
                   help="never download official weights: if they are missing, the page says what to download")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the studio)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data-dir", metavar="DIR", type=Path,
                   help="where projects, media and annotations are kept (default $ANYSEG_HOME/studio)")
    p.add_argument("--samples", metavar="DIR", type=Path,
                   help="a local folder of the gallery's samples (images/, videos/) to use instead of downloading")
    p.add_argument("--max-upload-mb", type=float, default=1024, help="largest upload accepted (default 1024 MiB)")
    p.add_argument("--session-ttl", type=float, default=1800, metavar="SECONDS",
                   help="close sessions idle this long, freeing their memory (default 1800)")
    p.add_argument("--max-sessions", type=int, default=8, help="live sessions kept at most (default 8)")
    p.add_argument("--open", metavar="FILE", type=Path,
                   help="start with this image or video as a project (the address printed opens it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from anyseg.errors import InvalidInputError
    from anyseg.loading import check_device
    from anyseg.server import ServerSettings, create_app

    if args.max_upload_mb <= 0 or args.session_ttl <= 0 or args.max_sessions < 1:
        raise InvalidInputError("--max-upload-mb and --session-ttl must be positive, --max-sessions at least 1")
    if not 0 < args.port < 65536:
        raise InvalidInputError(f"--port must be between 1 and 65535, got {args.port}")
    _check_port(args.host, args.port)
    loopback = args.host == "localhost" or _is_loopback(args.host)
    settings = ServerSettings(
        model=args.model or (None if args.checkpoint else "sam2.1-tiny"),
        checkpoint=args.checkpoint,
        device=str(check_device(args.device)),
        precision=args.precision,
        download=not args.no_download,
        data_dir=args.data_dir,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        session_ttl_s=args.session_ttl,
        max_sessions=args.max_sessions,
        samples_dir=args.samples,
        # Bound to this machine: refuse other Host names, so no web page can reach the studio
        # through DNS rebinding.
        allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if loopback else None,
    )
    app = create_app(settings)
    page = ""
    if args.open is not None:
        page = f"#project={_add_project(app.state.studio, args.open)}"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a bad upload is answered; no need to log it
    if not loopback:
        print(f"anyseg: warning: listening on {args.host}: anyone who can reach it can use the studio",
              file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"anyseg studio: http://{shown}:{args.port}/{page}  (API docs at /docs; Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _add_project(studio, path: Path) -> str:
    """A new project on a local image or video; returns its id."""
    from anyseg.errors import MediaError

    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise MediaError(f"{path} cannot be read ({exc.strerror})") from None
    with stream:
        media = studio.library.ingest(stream, path.name)
    return studio.store.create_project(path.name, media).id


def _check_port(host: str, port: int) -> None:
    """Refuse, before anything starts (the model's loading, ``--open``'s project), an address
    the server could not listen on (a port in use: another studio?), as uvicorn binds it."""
    from anyseg.errors import InvalidInputError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                                "(another server there? choose another --port)") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
