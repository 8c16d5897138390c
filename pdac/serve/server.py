"""Grand Challenge's invoke API method: a warm server that loads the models once and runs one case per request.

    python -m pdac.serve [--input /input] [--output /output] [--host 127.0.0.1] [--port 4743]

- Start-up: the HTTP server listens at once and answers `GET /health` with 503 while the weights are verified
  and both models loaded, then 200. Weights that cannot be loaded: the server stops listening, logs the
  reason as its last line and exits with the weights error's code (4), never having answered 200.
- `POST /invoke` (no body): `pdac.serve.gc_case.run_case` on the case now under `--input`, exactly what
  `process.py` runs, with the loaded models. 201 on success; a bad case answers with a non-2xx status whose
  JSON body carries the same one-line reason and exit code as `process.py` would give, and that line is the
  last one the server has logged (GC shows the user the last stderr line). One case at a time (409 while
  busy).
- Signals: the case runs in the main thread (HTTP is served from a second one), so SIGTERM/SIGINT during a
  case unwinds it as in `process.py`: its partial outputs are removed, the request gets 503 with
  `interrupted by SIGTERM; partial outputs removed`, and the server exits 143 (130). Between cases it simply
  stops (exit 0). GC sends SIGTERM at teardown and SIGKILL 5 s later.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import queue
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pdac.errors import Interrupted, PdacError, UsageError, raise_on_termination_signals
from pdac.logs import setup_logging
from pdac.serve.gc_case import CaseOutcome, failure, load_pipeline, run_case

log = logging.getLogger("pdac.serve")

DEFAULT_PORT = 4743  # fixed by GC: the server cannot read the shim's configuration
# A failed case's HTTP status by its exit code (README, exit codes): input errors are the request's fault,
# an interrupted case means the service is going away, anything else is the server's.
HTTP_STATUS = {2: 400, 3: 422, 130: 503, 143: 503}
SHUTDOWN_GRACE_S = 2.0  # well inside GC's 5 s between SIGTERM and SIGKILL


@dataclass(frozen=True)
class CaseFailure:
    exit_code: int
    error: str

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.exit_code, 500)


class CaseRunner:
    """Hands cases from the HTTP thread to the main thread, one at a time."""

    def __init__(self, input_root: Path, output_root: Path):
        self.input_root, self.output_root = input_root, output_root
        self.pipeline = None
        self.ready = False  # the models are loaded: /health answers 200
        self._jobs: queue.Queue[concurrent.futures.Future] = queue.Queue()
        self._lock = threading.Lock()
        self._current: concurrent.futures.Future | None = None

    def submit(self) -> concurrent.futures.Future | None:
        """A future for the case's CaseOutcome or CaseFailure; None while another case is running."""
        with self._lock:
            if self._current is not None and not self._current.done():
                return None
            self._current = concurrent.futures.Future()
            self._jobs.put(self._current)
            return self._current

    def serve_forever(self, http: threading.Thread) -> None:
        """Run submitted cases until the HTTP thread ends or a signal interrupts (`Interrupted`)."""
        while http.is_alive():
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            job.set_result(self.run_one())

    def run_one(self) -> CaseOutcome | CaseFailure:
        """The case now under the input folder. SIGTERM/SIGINT (`Interrupted`) propagates: it unwinds the case,
        whose outputs `run_case` removes, and `main` answers the request."""
        try:
            return run_case(self.input_root, self.output_root, lambda: self.pipeline)
        except Exception as e:  # noqa: BLE001 - a bad case must not take the warm server down
            if not isinstance(e, PdacError):
                log.exception("unexpected error in the case")
            code, line = failure(e)
            log.error("%s", line)  # the last line logged for this case: what GC shows the user
            return CaseFailure(code, line)

    def take_unanswered(self) -> list[concurrent.futures.Future]:
        """The requests not answered yet (the case running, if any, and any queued), removed from the queue."""
        with self._lock:
            pending = [self._current] if self._current is not None and not self._current.done() else []
            while not self._jobs.empty():
                job = self._jobs.get_nowait()
                if job not in pending:
                    pending.append(job)
            return pending


def create_app(runner: CaseRunner):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title="PDAC detection (Grand Challenge invoke API)", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/health")
    async def health():
        if runner.ready:
            return {"status": "ready"}
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.post("/invoke")
    async def invoke():
        if not runner.ready:
            return JSONResponse({"error": "not ready: the models are still loading"}, status_code=503)
        future = runner.submit()
        if future is None:
            return JSONResponse({"error": "busy: one case at a time"}, status_code=409)
        result = await asyncio.wrap_future(future)
        if isinstance(result, CaseFailure):
            return JSONResponse(asdict(result), status_code=result.http_status)
        return JSONResponse(asdict(result), status_code=201)

    return app


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a taken port is a clear one-line error."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    reuse_port=False)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pdac.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, default=Path("/input"), help="GC's input folder (default /input)")
    p.add_argument("--output", type=Path, default=Path("/output"), help="GC's output folder (default /output)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; the image listens on 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}, GC's)")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, got {args.port}")
    return args


def main(argv=None) -> int:
    import uvicorn

    args = parse_args(argv)
    setup_logging()
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start/stop chatter would follow a case's error
    runner = CaseRunner(args.input, args.output)
    server = uvicorn.Server(uvicorn.Config(create_app(runner), log_config=None, access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    http = None
    try:
        raise_on_termination_signals()
        sock = listen(args.host, args.port)
        http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        http.start()
        log.info("listening on http://%s:%d (/health 503 until the models are loaded)", args.host, args.port)
        started = time.perf_counter()
        runner.pipeline = load_pipeline()
        runner.ready = True
        log.info("models loaded in %.1f s; ready for POST /invoke (input %s, output %s)",
                 time.perf_counter() - started, args.input, args.output)
        runner.serve_forever(http)
        _stop(server, http)
        log.error("the HTTP server stopped unexpectedly")
        return 1
    except Interrupted as e:
        # During a case: its outputs are already removed; log its line (the last), answer it 503, stop.
        # During start-up: the line, then stop. Between cases: just stop.
        unanswered = runner.take_unanswered()
        if unanswered or not runner.ready:
            log.error("%s", e)
        for future in unanswered:
            future.set_result(CaseFailure(e.exit_code, str(e)))
        _stop(server, http)
        return e.exit_code if unanswered or not runner.ready else 0
    except Exception as e:  # noqa: BLE001 - start-up failed: stop listening, then the reason as the last line
        _stop(server, http)
        if not isinstance(e, PdacError):
            log.exception("unexpected error at start-up")
        code, line = failure(e)
        log.error("%s", line)
        return code


def _stop(server, http: threading.Thread | None) -> None:
    server.should_exit = True
    if http is not None and http.is_alive():
        http.join(timeout=SHUTDOWN_GRACE_S + 1)


if __name__ == "__main__":
    sys.exit(main())
