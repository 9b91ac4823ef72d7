// The Tributary catalog page: talks to the REST API on this origin (/v1/packages, /v1/plugins).
// Every value from the API goes into the page as text (textContent), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  query: "",
  // name, relevance (only with a query) or updated.
  sort: "name",
  sources: new Set(),
  categories: new Set(),
  repositories: new Set(),
  deprecated: false,
  pageSize: 20,
  // tokens[i] is the page token of page i (page 0 has none); the previous page is one step back.
  tokens: [""],
  // offsets[i] is the position in the listing of page i's first package.
  offsets: [0],
  page: 0,
  next: "",
  // The counts of the listing's first page: { total, complete, facets }, kept while paging. A
  // request that starts a listing asks for new ones (wantCounts).
  counts: null,
  wantCounts: true,
  // Each listing request gets a number; an answer to an older one is dropped.
  serial: 0,
};
// Facet groups listed in full rather than their largest values only.
const expanded = new Set();
const FACET_PREVIEW = 10;
const FACET_GROUPS = ["repositories", "categories"];
const SORTS = ["name", "relevance", "updated"];
const numbers = new Intl.NumberFormat("en-US");
const TOKEN_KEY = "tributary.token";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// "1.2.3" and "v1.2.3" both read "v1.2.3".
function version(value) {
  return value ? (/^v/i.test(value) ? value : "v" + value) : null;
}

function safeUrl(value, schemes) {
  try {
    const url = new URL(value, location.href);
    return schemes.includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

// An API call: JSON in, JSON out; a 401 asks for a token; other errors carry the gRPC code.
async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, { headers });
  } catch (e) {
    throw { code: "UNAVAILABLE", message: "the server did not answer (" + e.message + ")" };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.ok) return body;
  const error = {
    code: (body && body.code) || "HTTP " + response.status,
    message: (body && body.message) || response.statusText,
    status: response.status,
  };
  throw error;
}

function askForToken(message) {
  $("token-reason").textContent = message || "";
  $("token-form").hidden = false;
  $("token").focus();
}

function showError(error) {
  if (error.status === 401) {
    askForToken(error.message);
    return;
  }
  const box = $("error");
  box.replaceChildren(el("strong", { text: error.code }), " " + error.message);
  box.hidden = false;
}

// A count as the page shows it, with thousands separators: a number, or the decimal string that
// proto3 JSON makes of a 64-bit integer.
function formatCount(value) {
  try {
    return numbers.format(BigInt(value));
  } catch {
    return String(value);
  }
}

// A query the server could not parse: INVALID_ARGUMENT whose message names the position.
function isQueryError(error) {
  return error.status === 400 && /^filter\.query: /.test(error.message || "");
}

function showQueryError(message) {
  const box = $("q-error");
  box.textContent = message;
  box.hidden = false;
  $("q").setAttribute("aria-invalid", "true");
}

function clearQueryError() {
  $("q-error").hidden = true;
  $("q-error").textContent = "";
  $("q").removeAttribute("aria-invalid");
}

// ---- the listing ----

function listingPath(withCounts) {
  const params = new URLSearchParams();
  params.set("page_size", String(state.pageSize));
  const token = state.tokens[state.page];
  if (token) params.set("page_token", token);
  if (state.query) params.set("query", state.query);
  if (state.sort !== "name") params.set("sort", state.sort);
  for (const category of state.categories) params.append("categories", category);
  for (const repository of state.repositories) params.append("repositories", repository);
  for (const source of state.sources) params.append("sources", source);
  if (state.deprecated) params.set("include_deprecated", "true");
  if (withCounts) params.set("include_facets", "true");
  return "/v1/packages?" + params.toString();
}

async function loadPage() {
  const serial = ++state.serial;
  const withCounts = state.wantCounts;
  $("status").textContent = "Loading…";
  document.body.setAttribute("aria-busy", "true");
  let answer;
  try {
    answer = await api(listingPath(withCounts));
  } catch (error) {
    if (serial !== state.serial) return;
    document.body.removeAttribute("aria-busy");
    $("packages").replaceChildren();
    $("failures").hidden = true;
    $("status").textContent = "";
    state.next = "";
    if (withCounts) {
      state.counts = null;
      renderCounts();
    }
    if (isQueryError(error)) {
      $("error").hidden = true;
      $("status").textContent = "Correct the search to list packages.";
      showQueryError(error.message);
    } else {
      clearQueryError();
      showError(error);
    }
    updatePager();
    return;
  }
  if (serial !== state.serial) return;
  document.body.removeAttribute("aria-busy");
  $("error").hidden = true;
  $("token-form").hidden = true;
  clearQueryError();
  const items = answer.availablePackageSummaries || [];
  state.next = answer.nextPageToken || "";
  state.offsets[state.page + 1] = state.offsets[state.page] + items.length;
  if (withCounts) {
    const facets = answer.facets || {};
    state.counts = {
      total: answer.totalSize === undefined ? null : answer.totalSize,
      complete: facets.complete === true,
      facets,
    };
    state.wantCounts = false;
    renderCounts();
  }
  renderPackages(items);
  renderFailures(answer.failedSources || []);
  $("status").textContent = rangeText(items.length);
  updatePager();
  syncLocation();
}

// "21–40 of 1,234": where this page is in the listing, and how many match in all (from the counts
// of the listing's first page; "at least" when a source was not counted).
function rangeText(shown) {
  const counts = state.counts;
  if (shown === 0) {
    return state.page === 0 && !state.next ? "0 results" : "No more packages.";
  }
  const first = state.offsets[state.page];
  let text = formatCount(first + 1) + "\u2013" + formatCount(first + shown);
  if (counts && counts.total !== null) {
    text += " of " + (counts.complete ? "" : "at least ") + formatCount(counts.total);
  }
  return text;
}

function updatePager() {
  const prev = $("prev");
  const next = $("next");
  const hadFocus = document.activeElement;
  prev.disabled = state.page === 0;
  next.disabled = !state.next;
  $("page-label").textContent = "Page " + (state.page + 1);
  // A button that just became disabled loses the focus: hand it to the other one.
  if (hadFocus === next && next.disabled && !prev.disabled) prev.focus();
  if (hadFocus === prev && prev.disabled && !next.disabled) next.focus();
}

// The first letter of the name until the icon has loaded (an icon that never loads leaves it).
function iconFor(summary, size) {
  const letter = (summary.displayName || summary.name || "?").trim().charAt(0) || "?";
  const fallback = el("span", { class: "icon", "aria-hidden": "true", text: letter });
  const src = summary.iconUrl && safeUrl(summary.iconUrl, ["https:", "data:"]);
  if (!src) return fallback;
  const img = el("img", {
    class: "icon", alt: "", width: size, height: size, referrerpolicy: "no-referrer",
  });
  img.addEventListener("load", () => fallback.replaceWith(img), { once: true });
  img.src = src;
  return fallback;
}

function renderPackages(items) {
  const list = $("packages");
  list.replaceChildren();
  for (const item of items) {
    const ref = item.availablePackageRef || {};
    const title = el("button", {
      type: "button",
      class: "open",
      "data-source": ref.source || "",
      "data-identifier": ref.identifier || "",
      onclick: () => openDetail(ref.source, ref.identifier),
      text: item.displayName || item.name,
    });
    const chips = el("div", { class: "chips" });
    for (const category of item.categories || []) {
      chips.append(el("button", {
        type: "button",
        class: "chip",
        title: "Show packages in " + category,
        onclick: () => {
          state.categories = new Set([category]);
          restart();
        },
        text: category,
      }));
    }
    const meta = [
      version(item.latestVersion),
      item.repository || null,
      ref.source && ref.source !== item.repository ? "source " + ref.source : null,
    ].filter(Boolean).join(" · ");
    list.append(el("li", { class: "package", "data-key": ref.source + "/" + ref.identifier },
      el("article", { class: "card" },
        el("div", { class: "card-head" },
          iconFor(item, 40),
          el("div", {},
            el("h3", {}, title),
            el("div", { class: "meta" }, meta,
              item.deprecated ? el("span", { class: "badge", text: "deprecated" }) : null))),
        el("p", { class: "desc", text: item.shortDescription || "" }),
        chips)));
  }
}

function renderFailures(failures) {
  const box = $("failures");
  if (failures.length === 0) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const list = el("ul");
  for (const f of failures) {
    list.append(el("li", { class: "failure" },
      el("strong", { text: f.source }),
      " (" + (f.plugin || "plugin") + ", " + (f.kind || "error") + "): " + (f.reason || "")));
  }
  box.replaceChildren(
    el("strong", { text: failures.length === 1 ? "One source did not answer." : failures.length + " sources did not answer." }),
    failures.length === 1
      ? " This page may be missing its packages; later pages include them once it recovers."
      : " This page may be missing their packages; later pages include them once they recover.",
    list);
  box.hidden = false;
}

// ---- counts ----

function countText(count) {
  return count === null ? "" : "(" + formatCount(count) + ")";
}

// The counts of the listing's first page beside the filter choices, and whether they are partial.
function renderCounts() {
  const counts = state.counts;
  const facets = (counts && counts.facets) || {};
  const bySource = new Map((facets.sources || []).map((f) => [f.value, f.count || "0"]));
  const missing = new Map((facets.missingSources || []).map((f) => [f.source, f]));
  for (const row of document.querySelectorAll("#sources .source")) {
    const span = row.querySelector(".count");
    const name = row.dataset.source;
    const failure = missing.get(name);
    span.textContent = bySource.has(name) ? countText(bySource.get(name)) : failure ? "(?)" : "";
    span.title = failure ? "not counted: " + (failure.reason || failure.kind || "no answer") : "";
  }
  for (const group of FACET_GROUPS) renderFacet(group, counts ? facets[group] || [] : []);
  $("deprecated-count").textContent =
    counts && state.deprecated ? countText(facets.deprecated || "0") : "";

  const note = $("counts-note");
  if (!counts || counts.complete) {
    note.hidden = true;
    note.replaceChildren();
    return;
  }
  const sources = facets.missingSources || [];
  note.replaceChildren(
    el("strong", { text: "Counts are partial." }),
    sources.length === 0 ? " Some sources were not counted." : " Not counted: ",
    ...sources.flatMap((f, i) => [
      i > 0 ? ", " : "",
      el("strong", { text: f.source }),
      f.reason ? " (" + f.reason + ")" : "",
    ]),
    sources.length ? "." : "");
  note.hidden = false;
}

// One facet group: a checkbox for each value with its count, the largest counts first; a value
// that is selected stays listed (to be cleared) even when nothing matches it now.
function renderFacet(group, counted) {
  const box = $(group);
  const selected = state[group];
  const counts = new Map(counted.map((f) => [f.value, f.count || "0"]));
  for (const value of selected) {
    if (!counts.has(value)) counts.set(value, state.counts && state.counts.complete ? "0" : null);
  }
  const entries = [...counts].sort((a, b) =>
    (b[1] === null ? -1 : Number(b[1])) - (a[1] === null ? -1 : Number(a[1])) ||
    (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const all = expanded.has(group);
  const shown = all ? entries : entries.filter(([value], i) => i < FACET_PREVIEW || selected.has(value));
  const active = document.activeElement;
  const focused = active && box.contains(active) && active.matches("input") ? active.dataset.value : null;
  const list = box.querySelector(".facet-values");
  list.replaceChildren(...shown.map(([value, count], i) => {
    const id = group + "-" + i;
    const input = el("input", {
      type: "checkbox", id, "data-value": value, "aria-describedby": id + "-count",
    });
    input.checked = selected.has(value);
    input.addEventListener("change", () => {
      if (input.checked) selected.add(value);
      else selected.delete(value);
      restart();
    });
    return el("li", { class: "facet-value" },
      input,
      el("label", { for: id, text: value }),
      el("span", { class: "count", id: id + "-count", text: countText(count) }));
  }));
  if (focused !== null) {
    const again = [...list.querySelectorAll("input")].find((i) => i.dataset.value === focused);
    // A value that is gone hands the focus to the group's first one.
    const next = again || list.querySelector("input") || box.querySelector(".facet-more:not([hidden])");
    if (next) next.focus();
  }
  const empty = box.querySelector(".facet-empty");
  empty.hidden = entries.length > 0;
  empty.textContent = state.counts
    ? "None match."
    : document.body.hasAttribute("aria-busy") ? "Counting…" : "Not counted.";
  const more = box.querySelector(".facet-more");
  more.hidden = entries.length <= FACET_PREVIEW;
  more.textContent = all ? "Show fewer" : "Show all " + entries.length;
  more.setAttribute("aria-expanded", String(all));
}

// ---- filters ----

function restart() {
  state.tokens = [""];
  state.offsets = [0];
  state.page = 0;
  state.wantCounts = true;
  loadPage();
}

// Relevance needs a query: without one it is not offered, and a listing by relevance goes back to
// names.
function updateSortChoices() {
  const relevance = $("sort").querySelector('option[value="relevance"]');
  const hasQuery = state.query !== "";
  relevance.disabled = !hasQuery;
  $("sort").title = hasQuery ? "" : "Relevance needs a search";
  if (!hasQuery && state.sort === "relevance") state.sort = "name";
  $("sort").value = state.sort;
}

function setQuery(query) {
  state.query = query;
  updateSortChoices();
  restart();
}

async function loadSources() {
  const box = $("sources");
  let answer;
  try {
    answer = await api("/v1/plugins");
  } catch (error) {
    $("sources-empty").textContent =
      error.status === 401 ? "Sources appear once a token is given." : "Sources unavailable: " + error.message;
    return;
  }
  const sources = answer.sources || [];
  $("sources-empty").hidden = sources.length > 0;
  if (sources.length === 0) $("sources-empty").textContent = "No sources configured.";
  for (const old of box.querySelectorAll(".source")) old.remove();
  for (const s of sources) {
    const id = "source-" + s.name.replace(/[^A-Za-z0-9_-]/g, "_");
    const box_ = el("input", { type: "checkbox", id, value: s.name, "aria-describedby": id + "-count" });
    box_.checked = state.sources.has(s.name);
    box_.addEventListener("change", () => {
      if (box_.checked) state.sources.add(s.name);
      else state.sources.delete(s.name);
      restart();
    });
    const status = (s.status || "").replace(/^STATUS_/, "").toLowerCase();
    const bad = status && status !== "ready" && status !== "loaded";
    box.append(el("div", { class: "source", "data-source": s.name },
      box_,
      el("label", { for: id, text: s.name, title: s.plugin ? "plugin " + s.plugin : "" }),
      el("span", { class: "count", id: id + "-count" }),
      status ? el("span", { class: "state" + (bad ? " bad" : ""), text: status, title: s.reason || "" }) : null));
  }
  renderCounts();
}

function syncLocation() {
  const params = new URLSearchParams();
  if (state.query) params.set("q", state.query);
  if (state.sort !== "name") params.set("sort", state.sort);
  for (const s of state.sources) params.append("source", s);
  for (const c of state.categories) params.append("category", c);
  for (const r of state.repositories) params.append("repository", r);
  if (state.deprecated) params.set("deprecated", "1");
  if (state.pageSize !== 20) params.set("page_size", String(state.pageSize));
  const search = params.toString();
  history.replaceState(null, "", search ? "?" + search : location.pathname);
}

function readLocation() {
  const params = new URLSearchParams(location.search);
  state.query = params.get("q") || "";
  const sort = params.get("sort");
  state.sort = SORTS.includes(sort) ? sort : "name";
  state.sources = new Set(params.getAll("source"));
  state.categories = new Set(params.getAll("category").filter(Boolean));
  state.repositories = new Set(params.getAll("repository").filter(Boolean));
  state.deprecated = params.get("deprecated") === "1";
  const size = parseInt(params.get("page_size") || "20", 10);
  state.pageSize = size > 0 && size <= 1000 ? size : 20;
  $("q").value = state.query;
  $("deprecated").checked = state.deprecated;
  const select = $("page-size");
  if (![...select.options].some((o) => o.value === String(state.pageSize))) {
    select.append(el("option", { text: String(state.pageSize) }));
  }
  select.value = String(state.pageSize);
  updateSortChoices();
}

// ---- a package's detail ----

// The source and the identifier each as one path segment, an identifier's slashes as %2F (the
// server decodes them back). A browser collapses "." and ".." segments, written %2E too, so
// `z/../../../v1/plugins` sent as several segments would request another path; a source or an
// identifier that is itself "." or ".." cannot be sent as a segment at all, and is not.
function segment(text) {
  if (text === "." || text === "..") {
    throw { code: "INVALID_ARGUMENT", message: JSON.stringify(text) + " cannot be requested as a path segment" };
  }
  return encodeURIComponent(text);
}

function detailPath(source, identifier) {
  return "/v1/packages/" + segment(source) + "/" + segment(identifier);
}

async function openDetail(source, identifier) {
  const dialog = $("detail");
  const body = $("detail-body");
  $("detail-title").textContent = identifier;
  $("detail-sub").textContent = "Loading…";
  $("detail-icon").hidden = true;
  $("detail-icon").onload = null;
  $("detail-icon").removeAttribute("src");
  body.replaceChildren();
  if (!dialog.open) dialog.showModal();
  $("detail-close").focus();
  let answer;
  try {
    answer = await api(detailPath(source, identifier));
  } catch (error) {
    if (error.status === 401) {
      dialog.close();
      askForToken(error.message);
      return;
    }
    $("detail-sub").textContent = "";
    body.replaceChildren(el("div", { class: "notice error", role: "alert" },
      el("strong", { text: error.code }), " " + error.message));
    return;
  }
  renderDetail(answer.availablePackageDetail || {});
}

function renderDetail(detail) {
  const summary = detail.summary || {};
  const ref = summary.availablePackageRef || {};
  $("detail-title").textContent = summary.displayName || summary.name || ref.identifier;
  $("detail-sub").textContent = [
    version(summary.latestVersion),
    summary.latestAppVersion ? "app " + summary.latestAppVersion : null,
    summary.repository ? "repository " + summary.repository : null,
    "source " + ref.source,
    detail.deprecated || summary.deprecated ? "deprecated" : null,
  ].filter(Boolean).join(" · ");
  const icon = $("detail-icon");
  const src = summary.iconUrl && safeUrl(summary.iconUrl, ["https:", "data:"]);
  icon.onload = () => { icon.hidden = false; };
  if (src) icon.src = src;
  const body = $("detail-body");
  const parts = [];
  if (summary.shortDescription) parts.push(el("p", { text: summary.shortDescription }));
  const links = el("p", { class: "links" });
  const home = detail.homeUrl && safeUrl(detail.homeUrl, ["https:", "http:"]);
  if (home) links.append(el("a", { href: home, rel: "noopener noreferrer", target: "_blank", text: "Home page" }), " ");
  for (const u of detail.sourceUrls || []) {
    const url = safeUrl(u, ["https:", "http:"]);
    if (url) links.append(el("a", { href: url, rel: "noopener noreferrer", target: "_blank", text: "Source" }), " ");
  }
  if (links.childNodes.length) parts.push(links);
  const versions = detail.versions || [];
  parts.push(el("h3", { text: "Versions (" + versions.length + ")" }));
  const rows = versions.map((v) => el("tr", {},
    el("td", { text: v.version || "" }),
    el("td", { text: v.appVersion || "" }),
    el("td", { text: v.created ? v.created.slice(0, 10) : "" }),
    el("td", { class: "digest", title: v.digest || "", text: v.digest ? v.digest.slice(0, 12) : "" })));
  parts.push(el("table", { id: "versions" },
    el("thead", {}, el("tr", {},
      el("th", { scope: "col", text: "Version" }), el("th", { scope: "col", text: "App version" }),
      el("th", { scope: "col", text: "Created" }), el("th", { scope: "col", text: "Digest" }))),
    el("tbody", {}, ...rows)));
  if ((detail.maintainers || []).length) {
    parts.push(el("h3", { text: "Maintainers" }));
    parts.push(el("ul", {}, ...detail.maintainers.map((m) => el("li", { text: m.name + (m.email ? " <" + m.email + ">" : "") }))));
  }
  if ((detail.keywords || []).length) {
    parts.push(el("h3", { text: "Keywords" }));
    parts.push(el("div", { class: "chips" }, ...detail.keywords.map((k) => el("span", { class: "chip", text: k }))));
  }
  if (detail.readme) {
    parts.push(el("h3", { text: "Readme" }));
    parts.push(el("div", { class: "readme", text: detail.readme }));
  }
  body.replaceChildren(...parts);
}

// ---- wiring ----

function start() {
  readLocation();
  let typing = null;
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    setQuery($("q").value.trim());
  });
  // Search as one types, once typing pauses.
  $("q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      const query = $("q").value.trim();
      if (query !== state.query) setQuery(query);
    }, 300);
  });
  $("sort").addEventListener("change", () => {
    state.sort = $("sort").value;
    restart();
  });
  for (const group of FACET_GROUPS) {
    $(group).querySelector(".facet-more").addEventListener("click", () => {
      if (expanded.has(group)) expanded.delete(group);
      else expanded.add(group);
      renderCounts();
    });
  }
  $("deprecated").addEventListener("change", () => {
    state.deprecated = $("deprecated").checked;
    restart();
  });
  $("page-size").addEventListener("change", () => {
    state.pageSize = parseInt($("page-size").value, 10);
    restart();
  });
  $("clear").addEventListener("click", () => {
    state.query = "";
    state.sources.clear();
    state.categories.clear();
    state.repositories.clear();
    state.deprecated = false;
    $("q").value = "";
    $("deprecated").checked = false;
    for (const box of document.querySelectorAll(".filters input[type=checkbox]")) box.checked = false;
    updateSortChoices();
    restart();
  });
  $("next").addEventListener("click", () => {
    if (!state.next) return;
    state.tokens[state.page + 1] = state.next;
    state.tokens.length = state.page + 2;
    state.offsets.length = state.page + 2;
    state.page += 1;
    loadPage();
  });
  $("prev").addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    loadPage();
  });
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail").addEventListener("click", (event) => {
    // A click on the backdrop (outside the dialog's box) closes it.
    const box = $("detail").getBoundingClientRect();
    const inside = event.clientX >= box.left && event.clientX <= box.right &&
      event.clientY >= box.top && event.clientY <= box.bottom;
    if (event.target === $("detail") && !inside) $("detail").close();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("token-form").hidden = true;
    loadSources();
    loadPage();
  });
  // "/" goes to the search box from anywhere but a text field.
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typingInField = target instanceof HTMLInputElement || target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement;
    if (event.key === "/" && !typingInField && !$("detail").open) {
      event.preventDefault();
      $("q").focus();
      $("q").select();
    }
  });
  loadSources();
  loadPage();
  // The chosen filter values until their counts come.
  renderCounts();
}

document.addEventListener("DOMContentLoaded", start);
