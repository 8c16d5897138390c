"""`pdac bench --gc-api`: Grand Challenge's two API methods timed on the same cases, in one run.

- **exec:** one `process.py` process per case, as GC runs an exec image: interpreter start-up, imports, weights
  verification and model loading, then the case. Timed per case from the process's start to its exit.
- **invoke:** one warm server (`python -m pdac.serve`), started once; per case, as GC's runtime wrapper does it,
  the output folder is emptied, the input folder swapped (a symlink re-pointed at the case's folder) and
  `POST /invoke` sent. Timed per case from the request to the 201. The first case is the warm-up: the
  ratio uses the second and later cases (the start-up, until `/health` answers 200, is reported apart).

Cases: the bundled GC sample (`test/input`, when the checkout has it) and `phantoms` small synthetic phantoms.
Both methods must give the same likelihood for every case (checked). The last report line is
`invoke_vs_exec=X.XX exec_s_per_case=.. invoke_s_per_case=.. invoke_startup_s=..`, where invoke_vs_exec is
the invoke seconds per case divided by the exec seconds per case over the same cases.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.config import REPO_ROOT

log = logging.getLogger(__name__)

SCAN_FOLDER = Path("images") / "venous-ct"  # GC's input layout (pdac.serve.gc_case)
LIKELIHOOD = "pdac-likelihood.json"


def gc_cases(root: Path, phantoms: int, seed: int) -> list[Path]:
    """GC input folders (`<case>/images/venous-ct/<name>.mha`): the bundled sample, then the phantoms."""
    from pdac.lab.phantom import PhantomSpec, make_phantom

    folders = []
    sample = sorted((REPO_ROOT / "test" / "input" / SCAN_FOLDER).glob("*.mha"))
    if sample:
        folders.append(root / "sample")
        (folders[-1] / SCAN_FOLDER).mkdir(parents=True)
        shutil.copyfile(sample[0], folders[-1] / SCAN_FOLDER / sample[0].name)
    for i in range(phantoms):
        image, _, _ = make_phantom(np.random.SeedSequence([seed + i, 0]), PhantomSpec(size="small"))
        folders.append(root / f"phantom{i}")
        (folders[-1] / SCAN_FOLDER).mkdir(parents=True)
        sitk.WriteImage(image, str(folders[-1] / SCAN_FOLDER / f"phantom{i}.mha"), useCompression=True)
    return folders


def exec_command() -> list[str]:
    """GC's exec entry point: the checkout's process.py, else the same code as a module (installed package)."""
    script = REPO_ROOT / "process.py"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "pdac.serve.gc_case"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(base: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the invoke server exited with {server.returncode} before it was ready")
        try:
            if http_status(f"{base}/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"the invoke server was not ready within {timeout:.0f} s")


def run_exec(cases: list[Path], work: Path, env: dict) -> list[dict]:
    rows = []
    for case in cases:
        out = work / f"exec-{case.name}"
        t0 = time.perf_counter()
        r = subprocess.run([*exec_command(), "--input", str(case), "--output", str(out)], env=env,
                           capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"exec {case.name}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
        rows.append({"case": case.name, "seconds": seconds, "likelihood": json.loads((out / LIKELIHOOD).read_text())})
        log.info("exec %s: %.2f s", case.name, seconds)
    return rows


def run_invoke(cases: list[Path], work: Path, env: dict) -> tuple[float, list[dict]]:
    """(start-up seconds until /health is 200, per-case rows)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    inp, out = work / "input", work / "output"
    out.mkdir()
    inp.symlink_to(cases[0], target_is_directory=True)
    t0 = time.perf_counter()
    with open(work / "server.log", "w") as server_log:
        server = subprocess.Popen([sys.executable, "-m", "pdac.serve", "--input", str(inp), "--output", str(out),
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=server_log)
    rows = []
    try:
        wait_healthy(base, server, timeout=300)
        startup = time.perf_counter() - t0
        log.info("invoke server ready after %.2f s", startup)
        for case in cases:
            for p in out.iterdir():  # as the shim does: empty /output, re-point /input
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            inp.unlink()
            inp.symlink_to(case, target_is_directory=True)
            t1 = time.perf_counter()
            status, body = http_status(f"{base}/invoke", "POST", timeout=1200)
            seconds = time.perf_counter() - t1
            if status != 201:
                raise RuntimeError(f"invoke {case.name}: HTTP {status}: {body[:300]!r}")
            rows.append({"case": case.name, "seconds": seconds,
                         "likelihood": json.loads((out / LIKELIHOOD).read_text())})
            log.info("invoke %s: %.2f s", case.name, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return startup, rows


def run_bench_gc(phantoms: int = 3, seed: int = 4300, weights: str | None = None) -> tuple[dict, list[str]]:
    env = {**os.environ, **({"PDAC_WEIGHTS": str(Path(weights).resolve())} if weights else {})}
    with tempfile.TemporaryDirectory(prefix="pdac-bench-gc-") as tmp:
        work = Path(tmp)
        cases = gc_cases(work / "cases", phantoms, seed)
        if len(cases) < 2:
            raise ValueError("need at least two cases (the first one warms the invoke server up)")
        exec_rows = run_exec(cases, work, env)
        startup, invoke_rows = run_invoke(cases, work, env)
    differ = [f"{e['case']}: exec {e['likelihood']} vs invoke {i['likelihood']}"
              for e, i in zip(exec_rows, invoke_rows, strict=True) if e["likelihood"] != i["likelihood"]]
    if differ:
        raise RuntimeError("exec and invoke disagree: " + "; ".join(differ))
    timed = slice(1, None)  # the second and later cases, for both methods
    exec_s = statistics.median(r["seconds"] for r in exec_rows[timed])
    invoke_s = statistics.median(r["seconds"] for r in invoke_rows[timed])
    results = {"cases": [c.name for c in cases], "exec": exec_rows, "invoke": invoke_rows,
               "invoke_startup_s": startup, "exec_s_per_case": exec_s, "invoke_s_per_case": invoke_s,
               "invoke_vs_exec": invoke_s / exec_s, "cpu_threads": os.cpu_count()}
    lines = [f"{e['case']}: exec {e['seconds']:.2f} s, invoke {i['seconds']:.2f} s{' (warm-up)' if n == 0 else ''}"
             f", likelihood {e['likelihood']:.4f}" for n, (e, i) in enumerate(zip(exec_rows, invoke_rows, strict=True))]
    lines.append(f"invoke_vs_exec={invoke_s / exec_s:.2f} exec_s_per_case={exec_s:.2f} "
                 f"invoke_s_per_case={invoke_s:.2f} invoke_startup_s={startup:.2f}")
    return results, lines
