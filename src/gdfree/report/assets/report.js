// gdfree report pages: sortable tables and the NiiVue viewer. Page text is set with textContent only.
"use strict";

function gdfreeSortable(table) {
  const heads = table.querySelectorAll("thead th");
  heads.forEach((th, col) => {
    const sort = () => {
      const ascending = !th.classList.contains("asc");
      heads.forEach((h) => h.classList.remove("asc", "desc"));
      th.classList.add(ascending ? "asc" : "desc");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const value = (row) => row.cells[col].dataset.value ?? row.cells[col].textContent;
      const numeric = rows.every((r) => value(r) === "" || !isNaN(Number(value(r))));
      rows.sort((a, b) => {
        const x = value(a), y = value(b);
        if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last
        const order = numeric ? Number(x) - Number(y) : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach((r) => body.appendChild(r));
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
  });
}

function gdfreeLocationText(mm) {
  return "x " + mm[0].toFixed(1) + " mm, y " + mm[1].toFixed(1) + " mm, z " + mm[2].toFixed(1) + " mm";
}

async function gdfreeStartViewer() {
  const data = window.gdfreeViewer;
  const canvas = document.getElementById("gl");
  if (!data || !canvas || !window.niivue) return;
  // a see-through crosshair with a gap at its centre: a small lesion under it stays visible
  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1], show3Dcrosshair: true, loadingText: "", crosshairColor: [1, 0.85, 0, 0.7], crosshairGap: 10,
  });
  await nv.attachToCanvas(canvas);
  const where = document.getElementById("location");
  nv.onLocationChange = (loc) => { where.textContent = gdfreeLocationText(loc.mm); };
  const layers = document.getElementById("layers");
  for (const [index, v] of data.volumes.entries()) {
    if (v.rgb) {  // one colour, the report's own (gdfree.io.colours.MASK_COLOURS): a two-entry lookup table
      nv.addColormap(v.colormap, { R: [0, v.rgb[0]], G: [0, v.rgb[1]], B: [0, v.rgb[2]], A: [0, 255], I: [0, 255] });
    }
    const image = await niivue.NVImage.loadFromBase64({
      base64: v.base64, name: v.name.replace(/[^A-Za-z0-9_-]/g, "_") + ".nii.gz", colormap: v.colormap,
      opacity: v.opacity, cal_min: v.cal_min, cal_max: v.cal_max,
    });
    nv.addVolume(image);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = v.opacity > 0;
    box.addEventListener("change", () => { nv.setOpacity(index, box.checked ? v.defaultOpacity : 0); });
    const label = document.createElement("label");
    label.appendChild(box);
    label.appendChild(document.createTextNode(" " + v.name));
    layers.appendChild(label);
  }
  nv.setSliceType(nv.sliceTypeMultiplanar);
  const points = new Map(data.lesions.map((p) => [p.key, p.mm]));
  document.querySelectorAll("table.jump tbody tr").forEach((row) => {
    const go = () => {
      const mm = points.get(row.dataset.lesion);
      if (!mm) return;
      nv.scene.crosshairPos = nv.mm2frac(mm);
      nv.drawScene();
      nv.createOnLocationChange();
      document.querySelectorAll("table.jump tr.selected").forEach((r) => r.classList.remove("selected"));
      row.classList.add("selected");
    };
    row.addEventListener("click", go);
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  });
  nv.createOnLocationChange();
  window.gdfreeNiivue = nv;
  document.body.dataset.viewer = "ready";
}

document.querySelectorAll("table.sortable").forEach(gdfreeSortable);
gdfreeStartViewer().catch((error) => {
  document.body.dataset.viewer = "failed";
  const where = document.getElementById("location");
  if (where) where.textContent = "the viewer could not start: " + error;
  console.error(error);
});
