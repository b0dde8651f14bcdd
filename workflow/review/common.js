"use strict";
// Helpers of both review pages (template.html, discovery.html), inserted by workflow/review/render.py.
const REVIEW = {
  // the columns of a downloaded decisions CSV (what snakemake enroll reads)
  CSV_HEADER: ["dataset", "image_id", "decision", "identity", "predicted", "decided_by", "fused", "priority",
               "reviewer", "decided_at", "run_id", "gallery_version"],
  el: function (tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  },
  csvLine: function (values) {
    return values.map(function (v) { return '"' + String(v === null || v === undefined ? "" : v).replace(/"/g, '""') + '"'; }).join(",");
  },
  // the CSV text of rows [dataset, image_id, decision, identity, predicted, decided_by, fused, priority, reviewer,
  // decided_at]; the page's run id and gallery version complete each row
  csv: function (rows, data) {
    const all = rows.map(function (r) { return REVIEW.csvLine(r.concat([data.run_id, data.gallery_version || 0])); });
    return [REVIEW.CSV_HEADER.join(",")].concat(all).join("\r\n") + "\r\n";
  },
  // the download button (and window.reviewDecisionsCSV, for tests and scripts); the photo size of config review
  setUp: function (prefix, data, text) {
    window.reviewDecisionsCSV = text;
    document.getElementById("export").addEventListener("click", function () {
      REVIEW.saveFile(prefix + "-" + data.dataset + "-decisions.csv", text());
    });
    document.documentElement.style.setProperty("--thumb", (data.thumbnail || 160) + "px");
    document.getElementById("zoom").addEventListener("click", REVIEW.unzoom);
  },
  // the photo ``id`` large (its embedded thumbnail, else its file) with a link to its full-resolution file; a
  // click closes it
  zoom: function (data, id) {
    const has = function (o, k) { return Object.prototype.hasOwnProperty.call(o || {}, k); };
    if (!has(data.images, id) && !has(data.files, id)) return;
    const box = document.getElementById("zoom");
    REVIEW.unzoom();
    const img = REVIEW.el("img");
    img.id = "zoom-img";
    img.alt = id;
    img.src = has(data.images, id) ? data.images[id] : data.files[id];
    box.appendChild(img);
    const caption = REVIEW.el("div", "caption", id);
    caption.appendChild(REVIEW.fullLink(data, id));
    box.appendChild(caption);
    box.classList.add("open");
  },
  unzoom: function () {
    const box = document.getElementById("zoom");
    box.classList.remove("open");
    while (box.firstChild) box.removeChild(box.firstChild);
  },
  fullLink: function (data, id) {
    const a = REVIEW.el("a", null, "full resolution");
    if (Object.prototype.hasOwnProperty.call(data.files || {}, id)) { a.href = data.files[id]; a.target = "_blank"; }
    a.rel = "noopener";
    a.addEventListener("click", function (ev) { ev.stopPropagation(); });
    return a;
  },
  saveFile: function (name, text) {
    const a = REVIEW.el("a");
    a.href = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  },
  // the reviewer field, kept in the browser for every page
  reviewer: function () {
    const key = "animal-reid-review:reviewer", field = document.getElementById("reviewer");
    try { field.value = window.localStorage.getItem(key) || ""; } catch (e) { /* private mode */ }
    field.addEventListener("input", function () {
      try { window.localStorage.setItem(key, field.value.trim()); } catch (e) { /* private mode */ }
    });
    return function () { return field.value.trim(); };
  },
};
