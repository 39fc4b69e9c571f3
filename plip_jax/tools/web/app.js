// PLIP person search page: talks to the JSON API of plip_jax.tools.serve_app, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
const imageUrl = (path) => "/image/" + path.split("/").map(encodeURIComponent).join("/");
let busy = 0;

async function api(url, options) {
  const t0 = performance.now();
  const res = await fetch(url, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = { detail: res.statusText }; }
  if (!res.ok) throw new Error((body && body.detail) || ("HTTP " + res.status));
  body.roundTripMs = performance.now() - t0;
  return body;
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    const kinds = { exact: "exact cosine", ivf: "IVF (faiss) ANN" };
    $("info").innerHTML =
      `<b>${info.gallery_size.toLocaleString()}</b> crops · index <b>${kinds[info.index] || info.index}</b>` +
      ` · model <b title="${escapeHtml(info.model_detail)}">${escapeHtml(info.model)}</b>`;
    const k = $("k");
    for (const n of [10, 20, 50, 100].filter((n) => n <= info.max_k)) {
      k.add(new Option(`top ${n}`, n, n === info.default_k, n === info.default_k));
    }
  } catch (e) { showError("cannot reach the server: " + e.message); }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }

function showQuery(html) { const q = $("query"); q.innerHTML = html; q.hidden = !html; }

function render(data, label) {
  const grid = $("grid");
  grid.replaceChildren();
  for (const r of data.results) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.path = r.path;
    card.dataset.rank = r.rank;
    card.title = `${r.path}\nclick: search by this image`;
    const name = r.path.split("/").slice(-2).join("/");
    card.innerHTML = `<img loading="lazy" alt="" src="${imageUrl(r.path)}"><span class="rank">#${r.rank}</span>` +
      `<div class="meta"><div class="score">${r.score.toFixed(3)}</div><div class="name">${escapeHtml(name)}</div></div>`;
    card.addEventListener("click", () => searchGallery(r.path));
    grid.appendChild(card);
  }
  const skipped = data.skipped ? ` · ${data.skipped.length} missing file(s) left out` : "";
  $("status").innerHTML = `${label} · <b>${data.results.length}</b> results in <b id="latency">${data.ms.toFixed(1)} ms</b>` +
    ` (server; ${data.roundTripMs.toFixed(0)} ms round trip)${skipped}`;
  $("status").dataset.kind = data.query.kind;
  grid.dataset.kind = data.query.kind;
}

async function run(task) {
  busy++;
  document.body.style.cursor = "progress";
  try { showError(""); await task(); }
  catch (e) { showError(e.message); }
  finally { if (--busy === 0) document.body.style.cursor = ""; }
}

function searchText(q) {
  return run(async () => {
    const data = await api(`/api/search?q=${encodeURIComponent(q)}&k=${$("k").value}`);
    showQuery("");
    render(data, `text query “${escapeHtml(data.query.text)}”`);
  });
}

function searchGallery(path) {
  return run(async () => {
    const data = await api(`/api/search/gallery?path=${encodeURIComponent(path)}&k=${$("k").value}`);
    showQuery(`<img alt="" src="${imageUrl(path)}"><span>image query: <b>${escapeHtml(path)}</b></span>`);
    render(data, "image query");
    window.scrollTo({ top: 0, behavior: "smooth" });
  });
}

function searchUpload(file) {
  return run(async () => {
    const form = new FormData();
    form.append("image", file);
    form.append("k", $("k").value);
    const data = await api("/api/search/image", { method: "POST", body: form });
    showQuery(`<img alt="" src="${URL.createObjectURL(file)}"><span>uploaded image: <b>${escapeHtml(file.name)}</b></span>`);
    render(data, "uploaded image query");
  });
}

$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) { showError("type a description of a person first"); return; }
  searchText(q);
});
$("upload").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (file) searchUpload(file);
  ev.target.value = "";
});
loadInfo();
