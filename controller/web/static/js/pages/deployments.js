// Deployments: the filtered list (statuses and ready/desired replicas live), the
// create form (the API's validation messages shown at their fields) and the
// detail page with live status, its instances, the engine's log followed over
// /ws/logs, and for admins scale, update, stop / start and delete.

import { api, ApiError, get } from "../api.js";
import {
  alertBox, clear, confirmDialog, debounce, field, fieldError, h, pageHeader, statusBadge, toast, when,
} from "../dom.js";
import { instancesTable, replicasText, scaleForm, stopStartButton, updateForm } from "../instances.js";
import { openSocket } from "../live.js";
import { STATUSES } from "./overview.js";

const BACKENDS = ["vllm", "sglang", "ollama"];

function workerNames(workers) {
  return new Map(workers.map((w) => [w.id, w.name]));
}

export async function renderList(ctx) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const workers = (await get("/api/workers")).items;
  const names = workerNames(workers);
  // Listening before the first load, and reloading on every change, means no
  // change can slip between the load and the subscription.
  const reload = debounce(() => load());
  ctx.onEvent((message) => {
    if (["deployment", "deployment_deleted", "resync"].includes(message.type)) reload();
  });
  const status = h("select", { name: "status" },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const worker = h("select", { name: "worker_id" },
    h("option", { value: "" }, "Any worker"),
    workers.map((w) => h("option", { value: w.id, selected: params.get("worker_id") === w.id }, w.name)));
  const body = h("tbody");
  const table = h("table", { className: "table", "aria-label": "Deployments" },
    h("thead", {}, h("tr", {}, ["Name", "Model", "Backend", "Status", "Replicas", "Worker", "Port", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  const empty = h("p", { className: "muted" });

  async function load() {
    const query = new URLSearchParams({ limit: "1000" });
    if (status.value) query.set("status", status.value);
    if (worker.value) query.set("worker_id", worker.value);
    const list = await get(`/api/deployments?${query}`);
    clear(body, list.items.map((d) => h("tr", { dataset: { id: d.id } },
      h("td", {}, h("a", { href: `#/deployments/${d.id}` }, d.name)),
      h("td", {}, d.model),
      h("td", {}, d.backend),
      h("td", { className: "status-cell" }, statusBadge(d.status)),
      h("td", { dataset: { replicas: replicasText(d) }, title: `${d.ready_replicas} ready of ${d.replicas} wanted` },
        replicasText(d), d.stopped ? h("small", {}, " stopped") : null),
      h("td", {}, names.get(d.worker_id) || (d.worker_id ? d.worker_id.slice(0, 8) : "unplaced")),
      h("td", {}, d.port ?? "–"),
      h("td", {}, when(d.created_at)))));
    empty.textContent = list.items.length ? "" : "No deployments match.";
  }

  for (const select of [status, worker]) select.addEventListener("change", load);
  await load();
  clear(ctx.view,
    pageHeader("Deployments", ctx.isAdmin ? h("a", { className: "button", href: "#/deployments/new" }, "New deployment") : null),
    h("form", { className: "filters", "aria-label": "Filters", onsubmit: (e) => e.preventDefault() },
      field("Status", status), field("Worker", worker)),
    h("div", { className: "scroll" }, table), empty);
}

export async function renderCreate(ctx) {
  if (!ctx.isAdmin) {
    clear(ctx.view, pageHeader("New deployment"), alertBox("Only admins create deployments."));
    return;
  }
  const workers = (await get("/api/workers")).items;
  const name = h("input", { name: "name", required: true, placeholder: "qwen-0-5b", autocomplete: "off" });
  const backend = h("select", { name: "backend" }, BACKENDS.map((b) => h("option", { value: b }, b)));
  const model = h("input", { name: "model", required: true, placeholder: "Qwen/Qwen2.5-0.5B-Instruct" });
  const replicas = h("input", { name: "replicas", type: "number", min: "0", step: "1", value: "1", inputmode: "numeric" });
  const worker = h("select", { name: "worker_id" },
    h("option", { value: "" }, "Automatic (the scheduler picks)"),
    workers.map((w) => h("option", { value: w.id, disabled: w.status !== "online" },
      `${w.name}${w.status === "online" ? "" : " (offline)"}`)));
  const gpuMemory = h("input", { name: "gpu_memory_utilization", type: "number", step: "0.05", min: "0", max: "1", placeholder: "0.9" });
  const maxLen = h("input", { name: "max_model_len", type: "number", min: "1", placeholder: "4096" });
  const extra = h("textarea", { name: "config", rows: 4, placeholder: '{"dtype": "auto"}', spellcheck: "false" });
  const message = h("div", { "aria-live": "assertive" });
  const form = h("form", { className: "card form", novalidate: true },
    message,
    field("Name", name, { hint: "Lowercase letters, digits, . _ -; becomes the model id in the gateway" }),
    field("Backend", backend),
    field("Model", model, { hint: "A Hugging Face model id" }),
    field("Replicas", replicas, { hint: "Instances to run, spread over workers" }),
    field("Worker", worker, { hint: "A worker here puts every replica on it" }),
    h("fieldset", {}, h("legend", {}, "Config"),
      field("GPU memory utilization", gpuMemory, { name: "config.gpu_memory_utilization" }),
      field("Max model length", maxLen, { name: "config.max_model_len" }),
      field("More config (JSON object)", extra, { name: "config" })),
    h("div", { className: "actions" },
      h("a", { href: "#/deployments", className: "button secondary" }, "Cancel"),
      h("button", { type: "submit" }, "Create deployment")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    let config = {};
    try {
      config = extra.value.trim() ? JSON.parse(extra.value) : {};
    } catch (error) {
      fieldError(form, "config", `Not valid JSON: ${error.message}`);
      return;
    }
    if (gpuMemory.value) config.gpu_memory_utilization = Number(gpuMemory.value);
    if (maxLen.value) config.max_model_len = Number(maxLen.value);
    const body = { name: name.value.trim(), backend: backend.value, model: model.value.trim(), config };
    const count = replicas.value.trim();
    // Sent as typed when it is not a whole number, so the API names the field.
    if (count) body.replicas = /^\d+$/.test(count) ? Number(count) : count;
    if (worker.value) body.worker_id = worker.value;
    try {
      const created = await api("POST", "/api/deployments", body);
      toast(`Deployment ${created.name} created`);
      location.hash = `#/deployments/${created.id}`;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const unplaced = [];
      for (const err of error.errors) {
        const loc = err.loc.filter((part) => part !== "body").join(".");
        if (!fieldError(form, loc, err.msg)) unplaced.push(`${loc}: ${err.msg}`);
      }
      if (!error.errors.length || unplaced.length) {
        clear(message, alertBox(error.errors.length ? unplaced.join("; ") : error.message));
      }
    }
  });
  clear(ctx.view, pageHeader("New deployment"), form);
  name.focus();
}

export async function renderDetail(ctx, id) {
  // Subscribed before the first read; every change re-reads the deployment, so
  // what is shown converges on the stored state whatever the timing.
  let loaded = false;
  let deployment = null;
  const refresh = debounce(async () => {
    const fresh = await get(`/api/deployments/${id}`).catch(() => null);
    if (fresh) deployment = fresh;
    if (loaded) draw();
  }, 50);
  ctx.onEvent((message) => {
    if ((message.type === "deployment" && message.deployment.id === id) || message.type === "resync") refresh();
  });
  deployment = await get(`/api/deployments/${id}`);
  const workers = workerNames((await get("/api/workers")).items);
  const facts = h("dl", { className: "facts" });
  const logs = h("pre", { className: "logs", tabindex: "0", "aria-label": "Engine log", "aria-live": "off" });
  const logState = h("p", { className: "muted log-state", role: "status" }, "Connecting…");
  const gone = h("div");

  const instances = h("div");
  const headActions = h("div", { className: "actions" });
  const rollout = h("div");
  const actionMessage = h("div", { "aria-live": "assertive" });
  const scale = ctx.isAdmin ? scaleForm(deployment, saved) : null;
  const update = ctx.isAdmin ? updateForm(deployment, saved) : null;

  /** The API's answer to one of our own changes: shown at once. */
  function saved(fresh) {
    deployment = fresh;
    draw();
  }

  function draw() {
    const d = deployment;
    const rows = [
      ["Status", h("span", { className: "status-cell" }, statusBadge(d.status), d.stopped ? h("small", {}, " (stopped)") : null)],
      ["Message", d.status_message || "–"],
      ["Replicas", h("span", { dataset: { testid: "replicas" } }, `${replicasText(d)} ready`)],
      ["Model", d.model],
      ["Backend", d.backend],
      ["Worker", d.worker_id ? h("a", { href: `#/workers/${d.worker_id}` }, workers.get(d.worker_id) || d.worker_id) : "unplaced"],
      ["Port", d.port ?? "–"],
      ["GPUs", (d.gpu_indices || []).join(", ") || "none"],
      ["Container", d.container_id ? d.container_id.slice(0, 12) : "–"],
      ["Spec version", String(d.spec_version ?? 1)],
      ["Created", when(d.created_at)],
      ["Config", h("code", {}, JSON.stringify(d.config || {}))],
    ];
    clear(facts, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    clear(instances, h("h2", {}, "Instances"), instancesTable(d, workers));
    clear(rollout, d.rollout_error ? alertBox(`Rolling update halted: ${d.rollout_error}`) : null);
    clear(headActions,
      d.status === "running" ? h("a", { className: "button secondary", href: `#/playground?model=${encodeURIComponent(d.name)}` }, "Open in playground") : null,
      ctx.isAdmin ? stopStartButton(d, saved, actionMessage) : null,
      remove);
    scale?.show(d);
  }

  const follow = openSocket(`/ws/logs/${id}?tail=500`, {
    onMessage(message) {
      if (message.type === "logs") {
        const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
        logs.append(message.data);
        if (atBottom) logs.scrollTop = logs.scrollHeight;
        logState.textContent = "Following the log live.";
      } else if (message.type === "instance") {
        // Another instance's log from here on (scaled down, rolled, restarted elsewhere).
        if (logs.textContent) logs.append(`── instance ${message.id.slice(0, 8)} ──\n`);
        logState.textContent = `Following instance ${message.id.slice(0, 8)}.`;
      } else if (message.type === "notice") {
        logState.textContent = message.message;
      } else if (message.type === "ready") {
        logState.textContent = "Following the log live.";
      }
    },
    onGone() {
      logState.textContent = "The deployment was deleted.";
      clear(gone, alertBox("This deployment was deleted.", "info"));
    },
  });
  ctx.onCleanup(() => follow.close());

  const remove = ctx.isAdmin
    ? h("button", {
      type: "button", className: "danger",
      async onclick() {
        if (!(await confirmDialog(`Delete deployment ${deployment.name}? Its containers are stopped and removed.`))) return;
        await api("DELETE", `/api/deployments/${id}`);
        toast(`Deployment ${deployment.name} deleted`);
        location.hash = "#/deployments";
      },
    }, "Delete")
    : null;
  draw();
  loaded = true;
  clear(ctx.view,
    h("p", { className: "crumbs" }, h("a", { href: "#/deployments" }, "Deployments"), " / "),
    h("div", { className: "page-head" }, h("h1", {}, deployment.name), headActions),
    gone, actionMessage, rollout,
    h("section", { className: "card" }, facts),
    h("section", { className: "card" }, instances),
    ctx.isAdmin ? h("section", { className: "card", "aria-label": "Change" }, h("h2", {}, "Change"),
      h("div", { className: "changes" }, scale.element, update)) : null,
    h("section", { className: "card" }, h("h2", {}, "Engine log"), logState, logs));
}
