"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (standard library only): start headless
Chromium, open a page, evaluate JavaScript, send real input events (mouse wheel, mouse moves, keys), capture
screenshots, and collect what the page logged and requested.

The pipe carries JSON messages ending in a NUL byte: the browser reads commands from its fd 3 and writes replies
and events to its fd 4. One page, one session, commands answered in order."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np


class CdpError(RuntimeError):
    pass


class Browser:
    """`with Browser(chromium, flags, profile) as b: b.open(url); b.evaluate(...)`."""

    def __init__(self, executable: str, flags: list[str], profile: Path, timeout: float = 120.0):
        self.timeout = timeout
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds():  # the browser expects its pipe ends at fds 3 (in) and 4 (out), open across exec
            low_in, low_out = os.dup(to_browser_r), os.dup(from_browser_w)  # neither is 3 or 4 any more...
            high_in, high_out = os.dup2(low_in, 100), os.dup2(low_out, 101)  # ...unless dup picked them
            os.dup2(high_in, 3)  # dup2 clears close-on-exec
            os.dup2(high_out, 4)

        self.log = Path(f"{profile}.stderr")
        with self.log.open("wb") as log:
            # close_fds would close 3 and 4 after preexec_fn: the child inherits the other fds, and only keeps them
            self.proc = subprocess.Popen([executable, *flags, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                          "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, preexec_fn=child_fds, close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.events: list[dict] = []

    # transport ----------------------------------------------------------------------------------------------
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise CdpError(f"Chromium closed the pipe:\n{self._stderr_tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = "page",
             timeout: float | None = None) -> dict:
        """Send a command (to the page's session unless `session=None`) and wait for its answer."""
        request = self._send(method, params, self.session if session == "page" else session)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read_message(deadline)
            if message.get("id") == request:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = self._read_message(deadline)
            if message.get("method") == method:
                return message
            if "method" in message:
                self.events.append(message)

    def _stderr_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # page ---------------------------------------------------------------------------------------------------
    def open(self, url: str, width: int = 1280, height: int = 1000) -> None:
        """Attach to the first tab, collect its logs and requests, and load `url` (waits for the load event)."""
        targets = self.call("Target.getTargets", session=None)["targetInfos"]
        target = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                 session=None)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.navigate(url)

    def navigate(self, url: str) -> None:
        """Load `url` in the tab (waits for the load event); the logs and requests collected so far are dropped."""
        self.drain()
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float | None = None):
        """The value of a JavaScript expression (promises awaited); a thrown error raises CdpError."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def wheel(self, x: float, y: float, delta_y: float) -> None:
        self.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": delta_y})

    def move(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def key(self, key: str, code: int) -> None:
        """A real key press (down and up); `code` is the Windows virtual key code (38 up, 40 down, 33/34 pages)."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code})

    def screenshot(self, clip: dict | None = None) -> np.ndarray:
        """RGB pixels of the viewport (or of `clip`: x, y, width, height in CSS pixels)."""
        from PIL import Image

        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.call("Page.captureScreenshot", params)["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    # what the page did --------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Read the events that are already waiting (a cheap command is answered after them)."""
        self.call("Runtime.evaluate", {"expression": "0"})

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors and warnings, and browser log errors / warnings (failed loads,
        Content-Security-Policy violations)."""
        self.drain()
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                              for a in p.get("args", [])))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        """Every URL the page asked for (the page's own file included)."""
        self.drain()
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close")
                    self.proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
