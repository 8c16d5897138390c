// The case viewer page's controls (pdac.html.viewer): NiiVue (global `niivue`, embedded before this script) shows
// the embedded volumes in three planes; this script loads them and wires the window, overlay and lesion controls.
// `window.pdacViewer` ({nv, data, ready, goTo}) is what the browser tests read.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const status = document.getElementById("status");
  const canvas = document.getElementById("gl");
  const AXIAL = 0, CORONAL = 1, SAGITTAL = 2;
  const nv = new niivue.Niivue({
    isRadiologicalConvention: true, // the patient's right on the screen's left, as in the PNG overlays
    sagittalNoseLeft: true,
    multiplanarShowRender: 0, // never: three planes, no 3D rendering
    multiplanarLayout: 0, // auto: a row or a grid, whichever fits the canvas
    isColorbar: false,
    show3Dcrosshair: false,
    dragAndDropEnabled: false,
    isOrientationTextVisible: true,
    backColor: [0, 0, 0, 1],
    crosshairColor: [0.2, 0.75, 1, 0.9],
    crosshairWidth: 1,
    logLevel: "warn",
  });
  let plane = AXIAL; // the view that the keys scroll: the last one the mouse was over

  const volumeBase64 = id => document.getElementById(id).textContent.trim();
  const setStatus = text => { status.textContent = text; };

  function labelColormap(labels) {
    const max = Math.max(0, ...labels.map(l => l.value));
    const cmap = {R: [], G: [], B: [], A: [], I: [], labels: []};
    for (let v = 0; v <= max; v++) {
      const entry = labels.find(l => l.value === v);
      cmap.R.push(entry ? entry.rgb[0] : 0);
      cmap.G.push(entry ? entry.rgb[1] : 0);
      cmap.B.push(entry ? entry.rgb[2] : 0);
      cmap.A.push(entry ? 255 : 0);
      cmap.I.push(v);
      cmap.labels.push(entry ? entry.name : "");
    }
    return cmap;
  }

  function overlayRow(i) {
    return document.querySelector(`.overlay-row[data-overlay="${i}"]`);
  }

  // Overlay i is volume i + 1 (0 is the CT). A label overlay's opacity is its fill: its outline is always opaque,
  // and NiiVue skips a layer above the first overlay only at opacity 0, so a shown label keeps a trace of fill
  // (pdac.html.viewer puts the maps first: the first overlay is never a label).
  function applyOverlay(i) {
    const row = overlayRow(i);
    const shown = row.querySelector(".overlay-visible").checked;
    const opacity = parseFloat(row.querySelector(".overlay-opacity").value);
    const floor = data.overlays[i].kind === "label" ? 0.02 : 0;
    nv.setOpacity(i + 1, shown ? Math.max(opacity, floor) : 0);
  }

  function setWindow(width, level) {
    const ct = nv.volumes[0];
    ct.cal_min = level - width / 2;
    ct.cal_max = level + width / 2;
    document.getElementById("window-width").value = Math.round(width);
    document.getElementById("window-level").value = Math.round(level);
    nv.updateGLVolume();
  }

  // NiiVue draws an oblique scan along its own voxel axes (as the PNG overlays do) and then its "mm" are those of
  // the nearest orthogonal grid; the true world position goes through the scan's full affine (isSliceMM true).
  const worldToFrac = ras => nv.mm2frac(ras, 0, true);
  const fracToWorld = frac => Array.from(nv.frac2mm(frac, 0, true)).slice(0, 3);

  function goTo(i) {
    const finding = data.findings[i];
    nv.scene.crosshairPos = worldToFrac(finding.ras);
    nv.createOnLocationChange();
    nv.drawScene();
    for (const row of document.querySelectorAll("#findings tr[data-finding]")) {
      row.classList.toggle("current", row.dataset.finding === String(i));
    }
  }

  function showLocation(location) {
    const ras = fracToWorld(nv.scene.crosshairPos);
    const lps = [-ras[0], -ras[1], ras[2]].map(v => v.toFixed(1)).join(" ");
    const hu = location.values && location.values.length ? location.values[0].value : NaN;
    document.getElementById("location").textContent =
      `crosshair at ${lps} mm (LPS)` + (Number.isFinite(hu) ? `, CT ${Math.round(hu)} HU` : "");
  }

  async function load() {
    if (!document.createElement("canvas").getContext("webgl2")) {
      throw new Error("this browser has no WebGL2, which the viewer needs");
    }
    await nv.attachToCanvas(canvas);
    // matplotlib's "autumn" (red to yellow) as in the PNG overlays; 0 (no lesion) is transparent
    nv.addColormap("pdac_autumn", {R: [255, 255, 255], G: [0, 0, 255], B: [0, 0, 0], A: [0, 255, 255], I: [0, 1, 255]});
    const ct = await niivue.NVImage.loadFromBase64({
      base64: volumeBase64(data.ct.id), name: "ct.nii.gz", colormap: "gray",
      cal_min: data.ct.cal_min, cal_max: data.ct.cal_max, trustCalMinMax: true,
    });
    nv.addVolume(ct);
    for (const o of data.overlays) {
      const label = o.kind === "label";
      const image = await niivue.NVImage.loadFromBase64({
        base64: volumeBase64(o.id), name: `${o.key}.nii.gz`, colormap: label ? "gray" : "pdac_autumn",
        opacity: o.opacity, cal_min: 0, cal_max: 1, trustCalMinMax: true,
      });
      if (label) image.setColormapLabel(labelColormap(o.labels));
      nv.addVolume(image);
    }
    nv.setAtlasOutline(1);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    data.overlays.forEach((_, i) => applyOverlay(i));
    nv.onLocationChange = showLocation;
    nv.onIntensityChange = volume => {
      if (volume === nv.volumes[0]) {
        document.getElementById("window-width").value = Math.round(volume.cal_max - volume.cal_min);
        document.getElementById("window-level").value = Math.round((volume.cal_max + volume.cal_min) / 2);
      }
    };
    if (data.findings.length) goTo(0);
    else nv.createOnLocationChange();
    nv.drawScene();
  }

  // controls
  document.getElementById("window-preset").addEventListener("change", e => {
    const w = data.windows[Number(e.target.value)];
    setWindow(w.width, w.level);
  });
  for (const id of ["window-width", "window-level"]) {
    document.getElementById(id).addEventListener("change", () => {
      const width = parseFloat(document.getElementById("window-width").value);
      const level = parseFloat(document.getElementById("window-level").value);
      if (Number.isFinite(width) && width > 0 && Number.isFinite(level)) setWindow(width, level);
    });
  }
  data.overlays.forEach((_, i) => {
    const row = overlayRow(i);
    row.querySelector(".overlay-visible").addEventListener("change", () => applyOverlay(i));
    row.querySelector(".overlay-opacity").addEventListener("input", () => {
      row.querySelector(".overlay-visible").checked = true;
      applyOverlay(i);
    });
  });
  for (const row of document.querySelectorAll("#findings tr[data-finding]")) {
    row.querySelector("button").addEventListener("click", () => goTo(Number(row.dataset.finding)));
  }
  canvas.addEventListener("mousemove", e => {
    const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
    const tile = nv.tileIndex(e.offsetX * dpr, e.offsetY * dpr);
    if (tile >= 0 && nv.screenSlices[tile].axCorSag <= SAGITTAL) plane = nv.screenSlices[tile].axCorSag;
  });
  document.addEventListener("keydown", e => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    const step = {ArrowUp: 1, PageUp: 1, ArrowDown: -1, PageDown: -1}[e.key];
    if (!step || !nv.volumes.length) return;
    e.preventDefault();
    if (plane === AXIAL) nv.moveCrosshairInVox(0, 0, step);
    else if (plane === CORONAL) nv.moveCrosshairInVox(0, step, 0);
    else nv.moveCrosshairInVox(step, 0, 0);
  });

  const ready = load().catch(error => {
    setStatus(`The viewer could not start: ${error.message || error}`);
    throw error;
  });
  window.pdacViewer = {nv, data, ready, goTo, plane: () => plane, world: () => fracToWorld(nv.scene.crosshairPos)};
})();
