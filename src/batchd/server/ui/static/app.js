// The batchd dashboard: plain JavaScript against batchd's own API, no build step.
// Every call carries the user's key as a Bearer token; the server scopes what it
// answers to that key's tenant. Data is only ever written with textContent.
"use strict";

(() => {
  const ROOT = new URL("..", window.location.href); // the page lives at <root>/ui/
  const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);
  const CANCELLABLE = new Set(["validating", "in_progress"]);
  const KEY_STORE = "batchd.apiKey";
  const PAGE = 50;
  const FAST_POLL_MS = 1000;
  const SLOW_POLL_MS = 5000;

  const state = {
    key: window.sessionStorage.getItem(KEY_STORE) || "",
    authRequired: true,
    pages: 1,
    rows: new Map(), // batch id -> {row, errorsRow}
    openErrors: new Set(),
    timer: null,
    busy: false,
  };

  const $ = (selector) => document.querySelector(selector);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
    const resp = await fetch(new URL(path.replace(/^\//, ""), ROOT), { ...options, headers });
    if (!resp.ok) {
      let message = `${resp.status} ${resp.statusText}`;
      try {
        const body = await resp.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch (_) {
        // not JSON: keep the status line
      }
      throw new ApiError(resp.status, message);
    }
    return resp;
  }

  const getJson = async (path, options) => (await api(path, options)).json();

  // source "load": a failed refresh, cleared by the next good one.
  function showMessage(text, isError = false, source = "action") {
    const box = $("#message");
    box.textContent = text;
    box.classList.toggle("error", isError);
    box.dataset.source = source;
    box.hidden = !text;
  }

  // --------------------------------------------------------------- format

  const number = (n) => Number(n || 0).toLocaleString("en-US");
  const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "");

  function statusCell(batch) {
    return el("span", { className: `status status-${batch.status}` }, batch.status);
  }

  function progressCell(view) {
    const p = view.progress;
    const status = view.batch.status;
    const fill = el("div", {
      className: `fill${status === "completed" ? " done" : TERMINAL.has(status) ? " stopped" : ""}`,
    });
    fill.style.width = `${Math.min(100, p.percent)}%`;
    const bar = el(
      "div",
      {
        className: "bar",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": p.percent,
        dataset: { percent: String(p.percent) },
      },
      fill,
    );
    const failed = p.failed ? `, ${number(p.failed)} failed` : "";
    return [
      bar,
      el(
        "span",
        { className: "progress-text" },
        `${number(p.done)} / ${number(p.total)} (${p.percent.toFixed(1)}%)`,
        ` — ${number(p.completed)} ok${failed}`,
      ),
    ];
  }

  function usageCell(view) {
    const c = view.cost;
    return [
      el("span", {}, `${number(c.input_tokens)} in / ${number(c.output_tokens)} out`),
      el("span", { className: "sub cost" }, c.text),
    ];
  }

  function fileButtons(batch) {
    const files = [
      ["input", batch.input_file_id],
      ["output", batch.output_file_id],
      ["error", batch.error_file_id],
    ];
    return files
      .filter(([, id]) => id)
      .map(([kind, id]) =>
        el(
          "button",
          {
            type: "button",
            className: "download",
            dataset: { kind },
            title: `Download ${id}`,
            onclick: () => download(id, `${batch.id}_${kind}.jsonl`),
          },
          kind,
        ),
      );
  }

  function actionButtons(view) {
    const batch = view.batch;
    const buttons = [];
    if (CANCELLABLE.has(batch.status)) {
      buttons.push(
        el(
          "button",
          { type: "button", className: "cancel danger", onclick: () => cancel(batch.id) },
          "Cancel",
        ),
      );
    }
    const hasErrors = view.progress.failed > 0 || (batch.errors && batch.errors.data.length);
    if (hasErrors) {
      const open = state.openErrors.has(batch.id);
      buttons.push(
        el(
          "button",
          { type: "button", className: "errors-toggle", onclick: () => toggleErrors(batch.id) },
          open ? "Hide errors" : "Errors",
        ),
      );
    }
    return buttons;
  }

  function renderRow(view) {
    const b = view.batch;
    const p = view.progress;
    return el(
      "tr",
      { className: "batch", dataset: { batchId: b.id, status: b.status } },
      el(
        "td",
        {},
        el("code", {}, b.id),
        el("span", { className: "sub" }, `${b.endpoint}${b.model ? ` · ${b.model}` : ""}`),
        el("span", { className: "sub" }, when(b.created_at)),
      ),
      el("td", {}, statusCell(b)),
      el("td", { className: "progress" }, progressCell(view)),
      el("td", { className: "elapsed" }, p.elapsed),
      el("td", { className: "eta" }, p.eta),
      el("td", { className: "usage" }, usageCell(view)),
      el("td", { className: "files" }, fileButtons(b)),
      el("td", { className: "actions" }, actionButtons(view)),
    );
  }

  // -------------------------------------------------------------- refresh

  async function loadBatches() {
    const views = [];
    let after = null;
    for (let page = 0; page < state.pages; page += 1) {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (after) query.set("after", after);
      const list = await getJson(`/ui/api/batches?${query}`);
      views.push(...list.data);
      if (!list.has_more) return { views, hasMore: false };
      after = list.last_id;
    }
    return { views, hasMore: true };
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    let next = SLOW_POLL_MS;
    try {
      if (state.authRequired && !state.key) {
        render([], false);
        $("#key-status").textContent = "enter a key to see your batches";
        return;
      }
      const { views, hasMore } = await loadBatches();
      render(views, hasMore);
      await loadBackends();
      await loadUsage();
      if (views.some((v) => !TERMINAL.has(v.batch.status))) next = FAST_POLL_MS;
      $("#refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
      if ($("#message").dataset.source === "load") showMessage("");
    } catch (err) {
      render([], false);
      showMessage(err.message, true, "load");
    } finally {
      state.busy = false;
      schedule(next);
    }
  }

  async function loadBackends() {
    let list;
    try {
      list = await getJson("/ui/api/backends");
    } catch (_) {
      return; // the batches table shows the error
    }
    const rows = list.data.map((b) =>
      el(
        "tr",
        {},
        el("td", {}, b.name),
        el("td", {}, `${Math.floor(b.limit)} of ${b.ceiling}`),
        el("td", {}, b.in_flight),
        el("td", {}, Math.round(b.server_queue)),
        el("td", {}, b.server_running === null ? "?" : b.server_running),
        el("td", { className: "muted" }, `${b.source}, ${b.phase}`),
      ),
    );
    $("#backend-rows").replaceChildren(...rows);
    $("#backends").hidden = rows.length === 0;
  }

  async function loadUsage() {
    let u;
    try {
      u = await getJson("/ui/api/usage");
    } catch (_) {
      return; // the batches table shows the error
    }
    const fmt = (n) => Number(n).toLocaleString("en-US");
    const limits = [
      u.max_enqueued_tokens === null ? null : `${fmt(u.max_enqueued_tokens)} tokens`,
      u.max_enqueued_requests === null ? null : `${fmt(u.max_enqueued_requests)} requests`,
    ].filter((x) => x !== null);
    const row = el(
      "tr",
      {},
      el("td", {}, u.key),
      el("td", {}, fmt(u.batches)),
      el("td", {}, fmt(u.requests)),
      el("td", {}, fmt(u.input_tokens)),
      el("td", {}, fmt(u.output_tokens)),
      el("td", {}, String(u.weight)),
      el("td", { className: "muted" }, limits.length ? limits.join(", ") : "none"),
    );
    $("#usage-rows").replaceChildren(row);
    $("#usage").hidden = false;
  }

  function schedule(ms) {
    window.clearTimeout(state.timer);
    state.timer = window.setTimeout(refresh, ms);
  }

  function render(views, hasMore) {
    const body = $("#batch-rows");
    const seen = new Set();
    let anchor = null; // rows are kept in server order: newest first
    for (const view of views) {
      const id = view.batch.id;
      seen.add(id);
      const row = renderRow(view);
      const entry = state.rows.get(id);
      if (entry) {
        entry.row.replaceWith(row);
        entry.row = row;
      } else {
        state.rows.set(id, { row, errorsRow: null });
      }
      const current = state.rows.get(id);
      const want = anchor ? anchor.nextSibling : body.firstChild;
      if (want !== row) body.insertBefore(row, want);
      anchor = row;
      if (state.openErrors.has(id)) {
        loadErrors(id, row);
        if (current.errorsRow) {
          row.after(current.errorsRow);
          anchor = current.errorsRow;
        }
      } else if (current.errorsRow) {
        current.errorsRow.remove();
        current.errorsRow = null;
      }
    }
    for (const [id, entry] of state.rows) {
      if (seen.has(id)) continue;
      entry.row.remove();
      if (entry.errorsRow) entry.errorsRow.remove();
      state.rows.delete(id);
    }
    $("#empty").hidden = views.length > 0;
    $("#more").hidden = !hasMore;
  }

  // --------------------------------------------------------------- errors

  async function loadErrors(id, row) {
    let content;
    try {
      const summary = await getJson(`/ui/api/batches/${encodeURIComponent(id)}/errors`);
      const codes = Object.entries(summary.by_code);
      content = codes.length
        ? el(
            "ul",
            {},
            codes.map(([code, n]) =>
              el("li", { dataset: { code } }, el("code", {}, code), `: ${number(n)}`),
            ),
          )
        : el("span", { className: "muted" }, "no errors recorded yet");
      if (summary.source === "unavailable") {
        content = el("span", { className: "muted" }, "the error file was deleted");
      }
    } catch (err) {
      content = el("span", { className: "muted" }, err.message);
    }
    const entry = state.rows.get(id);
    if (!entry || !state.openErrors.has(id)) return;
    const errorsRow = el(
      "tr",
      { className: "errors", dataset: { batchId: id } },
      el("td", { colspan: 8 }, el("strong", {}, "Errors by code"), content),
    );
    if (entry.errorsRow) entry.errorsRow.replaceWith(errorsRow);
    else entry.row.after(errorsRow);
    entry.errorsRow = errorsRow;
  }

  function toggleErrors(id) {
    if (state.openErrors.has(id)) state.openErrors.delete(id);
    else state.openErrors.add(id);
    refresh();
  }

  // -------------------------------------------------------------- actions

  async function cancel(id) {
    if (!window.confirm(`Cancel ${id}? Lines not yet run will not run.`)) return;
    try {
      const batch = await getJson(`/v1/batches/${encodeURIComponent(id)}/cancel`, {
        method: "POST",
      });
      showMessage(`${batch.id} is ${batch.status}.`);
    } catch (err) {
      showMessage(err.message, true);
    }
    refresh();
  }

  async function download(fileId, filename) {
    try {
      const resp = await api(`/v1/files/${encodeURIComponent(fileId)}/content`);
      const href = URL.createObjectURL(await resp.blob());
      const link = el("a", { href, download: filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(href), 60000);
    } catch (err) {
      showMessage(err.message, true);
    }
  }

  async function createBatch(event) {
    event.preventDefault();
    const file = $("#upload-file").files[0];
    if (!file) {
      showMessage("Choose a .jsonl file first.", true);
      return;
    }
    const submit = $("#upload-submit");
    submit.disabled = true;
    try {
      const form = new FormData();
      form.append("purpose", "batch");
      form.append("file", file, file.name);
      showMessage(`Uploading ${file.name}…`);
      const uploaded = await getJson("/v1/files", { method: "POST", body: form });
      const batch = await getJson("/v1/batches", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          input_file_id: uploaded.id,
          endpoint: $("#upload-endpoint").value,
          completion_window: $("#upload-window").value.trim(),
        }),
      });
      showMessage(`Created ${batch.id} from ${uploaded.filename}.`);
      $("#upload-form").reset();
    } catch (err) {
      showMessage(err.message, true);
    } finally {
      submit.disabled = false;
    }
    refresh();
  }

  // ----------------------------------------------------------------- keys

  function useKey(key) {
    state.key = key;
    if (key) window.sessionStorage.setItem(KEY_STORE, key);
    else window.sessionStorage.removeItem(KEY_STORE);
    $("#key-input").value = "";
    $("#key-status").textContent = key ? `using key …${key.slice(-4)}` : "";
    showMessage("");
    for (const entry of state.rows.values()) {
      entry.row.remove();
      if (entry.errorsRow) entry.errorsRow.remove();
    }
    state.rows.clear();
    state.openErrors.clear();
    state.pages = 1;
    refresh();
  }

  async function start() {
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      useKey($("#key-input").value.trim());
    });
    $("#key-forget").addEventListener("click", () => useKey(""));
    $("#upload-form").addEventListener("submit", createBatch);
    $("#more").addEventListener("click", () => {
      state.pages += 1;
      refresh();
    });
    try {
      const info = await getJson("/ui/api/info");
      state.authRequired = info.auth_required;
    } catch (_) {
      state.authRequired = true;
    }
    if (!state.authRequired) $("#key-status").textContent = "open server: no key needed";
    else if (state.key) $("#key-status").textContent = `using key …${state.key.slice(-4)}`;
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
