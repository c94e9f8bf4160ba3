// duroot-stream web view: sortable tables, the index filter, and live pages.
// A live page listens to server-sent events and, when any arrive, fetches its own
// <main> again (at most every REFRESH_MS), keeping the sort and the filter.
"use strict";
const REFRESH_MS = 300;
const sorts = {}; // table id -> {column, descending}

function sortTable(table) {
  const s = sorts[table.id];
  if (!s) return;
  const th = table.tHead.rows[0].cells[s.column];
  const numeric = th.dataset.type === "num";
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  // A cell without data-value sorts by its text.
  const key = (row) => {
    const cell = row.cells[s.column];
    return cell.dataset.value ?? cell.textContent.trim();
  };
  rows.sort((a, b) => {
    const d = numeric ? Number(key(a)) - Number(key(b)) : key(a).localeCompare(key(b));
    return s.descending ? -d : d;
  });
  rows.forEach((row) => body.appendChild(row));
  Array.from(table.tHead.rows[0].cells).forEach((c, i) =>
    c.setAttribute("aria-sort", i !== s.column ? "none" : s.descending ? "descending" : "ascending"));
}

function filterTable() {
  const input = document.getElementById("filter");
  const table = document.querySelector("table.filterable");
  if (!input || !table) return;
  const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of table.tBodies[0].rows) {
    const text = row.textContent.toLowerCase();
    row.hidden = !words.every((w) => text.includes(w));
  }
}

document.addEventListener("click", (e) => {
  const th = e.target.closest("table.sortable th");
  if (!th) return;
  const table = th.closest("table");
  const column = th.cellIndex;
  const was = sorts[table.id];
  // numbers sort largest first on the first click, text A to Z
  const descending = was && was.column === column ? !was.descending : th.dataset.type === "num";
  sorts[table.id] = { column, descending };
  sortTable(table);
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && e.target.matches("table.sortable th")) e.target.click();
});
document.addEventListener("input", (e) => {
  if (e.target.id === "filter") filterTable();
});

function goLive(src) {
  const badge = document.getElementById("live-state");
  const main = document.getElementById("main");
  let timer = null;
  let updates = 0;
  const events = new EventSource(src);
  const refresh = async () => {
    timer = null;
    const url = new URL(location.href);
    url.searchParams.set("part", "main");
    const filter = document.getElementById("filter");
    const focused = document.activeElement === filter;
    const response = await fetch(url);
    if (!response.ok) return;
    const query = filter ? filter.value : null;
    main.innerHTML = await response.text();
    const again = document.getElementById("filter");
    if (again && query !== null) again.value = query;
    if (again && focused) again.focus();
    document.querySelectorAll("table.sortable").forEach(sortTable);
    filterTable();
    document.body.dataset.updates = String(++updates);
    const wf = document.getElementById("workflow");
    if (wf && wf.dataset.complete === "true") {
      events.close();
      badge.textContent = "complete";
    }
  };
  events.onopen = () => { badge.textContent = "live"; badge.className = "on"; };
  events.onerror = () => { badge.textContent = "reconnecting …"; badge.className = "off"; };
  events.onmessage = () => { if (timer === null) timer = setTimeout(refresh, REFRESH_MS); };
}

document.addEventListener("DOMContentLoaded", () => {
  filterTable();
  const src = document.body.dataset.liveSrc;
  const wf = document.getElementById("workflow");
  if (src && !(wf && wf.dataset.complete === "true")) goLive(src);
});
