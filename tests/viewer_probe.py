"""Headless Chromium for the case viewer pages (pdac.html.viewer): WebGL2 on Chromium's software renderer
(SwiftShader), driven through the DevTools protocol (tests/cdp.py) with real input events, and read back: NiiVue's
state (crosshair, window) and the canvas pixels, which the tests compare in Python.

`ViewerSession(page, work)` opens a page and waits until the viewer has drawn; its methods act as a user does
(mouse wheel or mouse moves over a view, keys, the page's own controls) and report what the page then shows."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from browser import chromium
from cdp import Browser

# WebGL2 through SwiftShader (no GPU here), nothing fetched in the background.
VIEWER_FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", "--mute-audio"]
AXIAL, CORONAL, SAGITTAL = 0, 1, 2


class ViewerSession:
    def __init__(self, page: Path, work: Path, size: tuple[int, int] = (1280, 1000)):
        work.mkdir(parents=True, exist_ok=True)
        self.browser = Browser(chromium(), VIEWER_FLAGS, work / "chromium-viewer-profile", timeout=180)
        try:
            self.url = Path(page).resolve().as_uri()
            self.browser.open(self.url, *size)
            self.js("window.pdacViewer.ready.then(() => true)")
        except BaseException:
            self.browser.close()
            raise

    def goto(self, page: Path) -> None:
        """Open another page in the same browser (and wait for its viewer)."""
        self.url = Path(page).resolve().as_uri()
        self.browser.navigate(self.url)
        self.js("window.pdacViewer.ready.then(() => true)")

    def close(self) -> None:
        self.browser.close()

    def screenshot(self, png: Path, width: int = 1280) -> Path:
        """The whole page as a PNG file."""
        from PIL import Image

        height = int(self.js("document.documentElement.scrollHeight"))
        self.browser.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                 "deviceScaleFactor": 1, "mobile": False})
        self.js("new Promise(r => requestAnimationFrame(() => { pdacViewer.nv.drawScene(); r(true); }))")
        Image.fromarray(self.browser.screenshot()).save(png)
        return png

    def js(self, expression: str):
        return self.browser.evaluate(expression)

    # what the page shows ----------------------------------------------------------------------------------
    def canvas(self) -> np.ndarray:
        """The canvas' RGB pixels, drawn and read in the same task (WebGL's buffer is still there)."""
        from PIL import Image

        uri = self.js("(() => { const nv = pdacViewer.nv; nv.drawScene(); "
                      "return nv.canvas.toDataURL('image/png'); })()")
        data = base64.b64decode(uri.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def position(self) -> dict:
        """The crosshair: `frac` (NiiVue's state), `mm` (world, RAS, from NiiVue) and `vox` (the CT voxel shown)."""
        return self.js("""(() => {
          const nv = pdacViewer.nv, frac = Array.from(nv.scene.crosshairPos);
          const mm = Array.from(nv.frac2mm(nv.scene.crosshairPos, 0, true)).slice(0, 3);
          return {frac, mm, vox: Array.from(nv.volumes[0].mm2vox(mm))};
        })()""")

    def tiles(self) -> dict[int, tuple[float, float, float, float]]:
        """{view: (left, top, width, height)} in canvas pixels."""
        raw = self.js("pdacViewer.nv.screenSlices.map(s => [s.axCorSag, Array.from(s.leftTopWidthHeight)])")
        return {kind: tuple(ltwh) for kind, ltwh in raw if kind <= SAGITTAL}

    def tile_slices(self, kind: int) -> tuple[slice, slice]:
        left, top, width, height = (round(v) for v in self.tiles()[kind])
        return slice(top, top + height), slice(left, left + width)

    def centre_of(self, kind: int) -> tuple[float, float]:
        """A view's centre in the page's CSS pixels (for input events)."""
        left, top, width, height = self.tiles()[kind]
        rect, dpr = self.js("[(r => [r.left, r.top])(pdacViewer.nv.canvas.getBoundingClientRect()),"
                            " pdacViewer.nv.uiData.dpr || 1]")
        return rect[0] + (left + width / 2) / dpr, rect[1] + (top + height / 2) / dpr

    def state(self) -> dict:
        return self.js("""(() => ({
          window: [pdacViewer.nv.volumes[0].cal_min, pdacViewer.nv.volumes[0].cal_max],
          inputs: [document.getElementById('window-width').value, document.getElementById('window-level').value],
          opacities: pdacViewer.nv.volumes.map(v => v.opacity),
          current: Array.from(document.querySelectorAll('#findings tr.current'), r => Number(r.dataset.finding)),
          location: document.getElementById('location').textContent,
          status: document.getElementById('status').textContent,
          volumes: pdacViewer.nv.volumes.length,
        }))()""")

    # what a user does ---------------------------------------------------------------------------------------
    def wheel(self, kind: int, delta_y: float = 100) -> None:
        self.browser.wheel(*self.centre_of(kind), delta_y)

    def point_at(self, kind: int) -> None:
        self.browser.move(*self.centre_of(kind))

    def key(self, name: str) -> None:
        codes = {"ArrowUp": 38, "ArrowDown": 40, "PageUp": 33, "PageDown": 34}
        self.browser.key(name, codes[name])

    def click_finding(self, i: int) -> None:
        self.js(f"document.querySelectorAll('#findings button')[{i}].click()")

    def show_overlay(self, i: int, shown: bool) -> None:
        self.js(f"""(() => {{ const box = document.querySelector('.overlay-row[data-overlay="{i}"] .overlay-visible');
          box.checked = {json.dumps(shown)}; box.dispatchEvent(new Event('change')); }})()""")

    def set_opacity(self, i: int, value: float) -> None:
        self.js(f"""(() => {{ const r = document.querySelector('.overlay-row[data-overlay="{i}"] .overlay-opacity');
          r.value = '{value}'; r.dispatchEvent(new Event('input')); }})()""")

    def choose_window(self, index: int) -> None:
        self.js(f"""(() => {{ const s = document.getElementById('window-preset'); s.value = '{index}';
          s.dispatchEvent(new Event('change')); }})()""")

    def overlays(self) -> list[dict]:
        return self.js("pdacViewer.data.overlays.map(o => ({key: o.key, kind: o.kind, visible: o.visible}))")

    def findings(self) -> list[dict]:
        return self.js("pdacViewer.data.findings")

    # what the page did ------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        return self.browser.problems()

    def fetched(self) -> list[str]:
        """Requests other than the page itself and data: URIs (those are the network, which must stay unused)."""
        return [u for u in self.browser.requests() if u != self.url and not u.startswith("data:")]


def changed_fraction(a: np.ndarray, b: np.ndarray, tolerance: int = 8) -> float:
    """The fraction of pixels that differ by more than `tolerance` in any channel."""
    assert a.shape == b.shape
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > tolerance).mean())


def hot_centroid(rgb: np.ndarray) -> np.ndarray | None:
    """(row, column) centroid of the overlay-coloured pixels (red to yellow: red well above blue)."""
    hot = rgb[..., 0].astype(np.int16) - rgb[..., 2].astype(np.int16) > 100
    return np.argwhere(hot).mean(axis=0) if hot.any() else None


def grey_centroid(rgb: np.ndarray, min_level: int = 40) -> np.ndarray | None:
    """(row, column) centroid of the grey pixels brighter than air (the body in a CT view)."""
    x = rgb.astype(np.int16)
    grey = (np.abs(x[..., 0] - x[..., 2]) < 12) & (np.abs(x[..., 1] - x[..., 2]) < 12) & (x[..., 1] > min_level)
    return np.argwhere(grey).mean(axis=0) if grey.any() else None
