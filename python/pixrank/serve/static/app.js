// pixrank web UI: vanilla JavaScript, no external code. Talks to the JSON API of
// pixrank.serve.app: GET /api/info, GET /api/search?q=..|like=..&k=.., POST /api/search/image.
// Result data is only ever put into the page with textContent / attributes, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null;          // the last query, to re-run it when k changes
let queryObjectURL = null;   // blob URL of an uploaded query image

function setError(msg) {
  const box = $("error");
  if (msg) { box.textContent = msg; box.hidden = false; } else { box.textContent = ""; box.hidden = true; }
}

function setStatus(msg) { $("status").textContent = msg || ""; }

async function readJSON(resp) {
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const msg = body && body.error ? body.error : `HTTP ${resp.status} ${resp.statusText}`;
    throw new Error(msg);
  }
  return body;
}

function k() { return $("k").value; }

function showQuery(kind, text, imageURL) {
  const view = $("query-view"), img = $("query-image");
  if (imageURL) { img.src = imageURL; img.hidden = false; } else { img.removeAttribute("src"); img.hidden = true; }
  $("query-text").textContent = text || "";
  view.hidden = !(text || imageURL);
}

function card(r) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "card";
  el.title = `${r.source}\nclick: search for images like this one`;
  const img = document.createElement("img");
  img.src = r.thumb_url; img.alt = r.caption || r.label || r.source; img.loading = "lazy";
  const top = document.createElement("div"); top.className = "top";
  const rank = document.createElement("span"); rank.className = "rank"; rank.textContent = `#${r.rank}`;
  const score = document.createElement("span"); score.className = "score"; score.textContent = r.score.toFixed(3);
  top.append(rank, score);
  const label = document.createElement("div"); label.className = "label"; label.textContent = r.label || "—";
  const cap = document.createElement("div"); cap.className = "caption"; cap.textContent = r.caption || r.source;
  el.append(img, top, label, cap);
  el.addEventListener("click", () => searchLike(r.id, r.thumb_url, r.label));
  return el;
}

function render(data) {
  const grid = $("results");
  grid.replaceChildren(...data.results.map(card));
  setStatus(`${data.results.length} of ${data.count.toLocaleString()} images · ${data.took_ms.toFixed(1)} ms`);
}

async function run(kind, fetcher, urlState) {
  setError(""); setStatus("searching…");
  try {
    const data = await readJSON(await fetcher());
    render(data);
    if (urlState !== undefined) history.replaceState(null, "", urlState);
  } catch (e) {
    $("results").replaceChildren();  // never leave the previous query's results under an error
    setStatus(""); setError(e.message);
  }
}

function searchText(q) {
  current = { kind: "text", q };
  showQuery("text", `“${q}”`, null);
  const params = new URLSearchParams({ q, k: k() });
  return run("text", () => fetch(`/api/search?${params}`), `/?${params}`);
}

function searchLike(id, thumbURL, label) {
  current = { kind: "like", id, thumbURL, label };
  showQuery("like", `images like item ${id}${label ? " (" + label + ")" : ""}`, thumbURL);
  const params = new URLSearchParams({ like: String(id), k: k() });
  window.scrollTo({ top: 0, behavior: "smooth" });
  return run("like", () => fetch(`/api/search?${params}`), `/?${params}`);
}

function searchFile(file) {
  if (!file) return;
  current = { kind: "image", file };
  if (queryObjectURL) URL.revokeObjectURL(queryObjectURL);
  queryObjectURL = URL.createObjectURL(file);
  showQuery("image", `image: ${file.name}`, queryObjectURL);
  const body = new FormData();
  body.append("image", file);
  body.append("k", k());
  return run("image", () => fetch("/api/search/image", { method: "POST", body }), "/");
}

function rerun() {
  if (!current) return;
  if (current.kind === "text") searchText(current.q);
  else if (current.kind === "like") searchLike(current.id, current.thumbURL, current.label);
  else if (current.kind === "image") searchFile(current.file);
}

async function loadInfo() {
  try {
    const info = await readJSON(await fetch("/api/info"));
    const parts = [`${info.count.toLocaleString()} images`, `${info.dim}-d embeddings`,
                   `${info.exact ? "exact search" : `HNSW M=${info.M}, ef=${info.ef}`}`,
                   `models: ${info.image_model} + ${info.text_model}`];
    if (info.dataset && info.dataset.name) parts.push(`data: ${info.dataset.name}`);
    $("engine-info").textContent = parts.join(" · ");
    const sel = $("k");
    for (const opt of [...sel.options]) if (Number(opt.value) > info.limits.max_k) opt.remove();
  } catch (e) {
    $("engine-info").textContent = "";
    setError(`cannot reach the engine: ${e.message}`);
  }
}

function init() {
  $("text-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("q").value;
    if (!q.trim()) { setError("type a few words first, e.g. “dark ankle boots”"); return; }
    searchText(q);
  });
  $("k").addEventListener("change", rerun);
  $("image").addEventListener("change", (ev) => searchFile(ev.target.files[0]));
  const drop = $("image-form");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files.length) searchFile(ev.dataTransfer.files[0]);
  });
  loadInfo();
  // a shared link: /?q=...&k=... or /?like=ID&k=...
  const p = new URLSearchParams(location.search);
  if (p.get("k") && [...$("k").options].some((o) => o.value === p.get("k"))) $("k").value = p.get("k");
  if (p.get("q")) { $("q").value = p.get("q"); searchText(p.get("q")); }
  else if (p.get("like")) searchLike(Number(p.get("like")), `/thumb/${encodeURIComponent(p.get("like"))}.png`, null);
}

document.addEventListener("DOMContentLoaded", init);
