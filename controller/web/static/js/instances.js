// A deployment's instances and the controls that change it (admins): scale
// (PATCH replicas), update (PATCH model / image / the whole config: a rolling
// update) and stop / start. Each control sends one call and hands the
// deployment the API answers with to `onSaved`; what the controller does next
// (placing, draining, rolling) reaches the page as live events.

import { api, ApiError } from "./api.js";
import { alertBox, clear, confirmDialog, field, fieldError, h, statusBadge, toast, when } from "./dom.js";

const SHORT_ID = 8;

/** "2/3": instances running (and not draining) of those wanted. */
export function replicasText(d) {
  return `${d.ready_replicas ?? 0}/${d.replicas ?? 1}`;
}

/** The instances as a table (or a note when there are none). */
export function instancesTable(d, workerNames) {
  const instances = d.instances || [];
  if (!instances.length) {
    const why = d.stopped ? "The deployment is stopped." : d.replicas === 0 ? "Scaled to 0 replicas." : "None placed yet.";
    return h("p", { className: "muted", dataset: { testid: "no-instances" } }, `No instances. ${why}`);
  }
  const head = ["Instance", "Status", "Worker", "Port", "GPUs", "Restarts", "Last exit", "Started", "Message"];
  return h("div", { className: "scroll" }, h("table", { className: "table", "aria-label": "Instances" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, instances.map((i) => h("tr", { dataset: { id: i.id } },
      h("td", {}, h("code", { title: i.id }, i.id.slice(0, SHORT_ID))),
      h("td", { className: "status-cell" }, statusBadge(i.status), i.draining ? h("small", {}, " draining") : null,
        i.spec_version !== d.spec_version ? h("small", { title: `spec version ${i.spec_version} of ${d.spec_version}` }, " old spec") : null),
      h("td", {}, i.worker_id
        ? h("a", { href: `#/workers/${i.worker_id}` }, i.worker_name || workerNames.get(i.worker_id) || i.worker_id.slice(0, SHORT_ID))
        : "unplaced"),
      h("td", {}, i.port ?? "–"),
      h("td", {}, (i.gpu_indices || []).join(", ") || "none"),
      h("td", { dataset: { restarts: i.restarts } }, String(i.restarts ?? 0)),
      h("td", {}, i.last_exit_code ?? "–"),
      h("td", {}, i.started_at ? when(i.started_at) : "–"),
      h("td", { className: "message-cell" }, i.status_message || "–"))))));
}

/** The message of a refused call: the fields a 422 names, else its detail. */
function refusal(error) {
  if (!error.errors.length) return error.message;
  return error.errors.map((e) => `${e.loc.filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
}

/** Send `call()`; on an API refusal show it in `slot` and resolve null. */
async function attempt(slot, call) {
  clear(slot);
  try {
    return await call();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    clear(slot, alertBox(refusal(error)));
    return null;
  }
}

/** Replicas: a number and a button; PATCH {replicas}. 409 says how many fit.
 * `show(d)` follows the deployment's count unless the user is editing it. */
export function scaleForm(d, onSaved) {
  const count = h("input", { name: "replicas", type: "number", min: 0, step: 1, inputmode: "numeric", value: d.replicas, required: true });
  const message = h("div", { "aria-live": "assertive" });
  const countField = field("Replicas", count, { hint: "Scaling down drains first; 0 keeps the deployment." });
  countField.classList.add("narrow");
  const form = h("form", { className: "inline-form", novalidate: true, "aria-label": "Scale" },
    h("h3", {}, "Scale"), message, countField, h("button", { type: "submit" }, "Scale"));
  let shown = d.replicas;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = count.value.trim();
    // Sent as typed when it is not a whole number, so the API names the field.
    const replicas = /^\d+$/.test(text) ? Number(text) : text;
    const saved = await attempt(message, () => api("PATCH", `/api/deployments/${d.id}`, { replicas }));
    if (!saved) return;
    toast(`Deployment ${saved.name} scaled to ${saved.replicas}`);
    onSaved(saved);
  });
  return {
    element: form,
    show(fresh) {
      // An edit in progress (the value differs from what was last shown) is kept.
      if (count.value === String(shown) && document.activeElement !== count) count.value = fresh.replicas;
      shown = fresh.replicas;
    },
  };
}

function sameJson(a, b) {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
  }
  return value;
}

/** Model, image and the whole config: only what changed is sent (PATCH);
 * any of them rolls the instances one at a time. */
export function updateForm(d, onSaved) {
  let current = d;
  const model = h("input", { name: "model", required: true, value: d.model, autocomplete: "off" });
  const image = h("input", { name: "image", value: d.config?.image || "", placeholder: "the backend's default image", autocomplete: "off" });
  const config = h("textarea", { name: "config", rows: 6, spellcheck: "false" });
  const message = h("div", { "aria-live": "assertive" });

  function fill(fresh) {
    current = fresh;
    model.value = fresh.model;
    image.value = fresh.config?.image || "";
    config.value = JSON.stringify(fresh.config || {}, null, 2);
  }
  fill(d);

  const form = h("form", { className: "form", novalidate: true, "aria-label": "Update" },
    h("h3", {}, "Update"),
    h("p", { className: "muted" }, "A rolling update: one new instance is started and running before one old one is drained and stopped. A new instance that fails halts it, the old ones keep serving."),
    message,
    field("Model", model, { name: "model" }),
    field("Image", image, { name: "image", hint: "Empty: the backend's default image" }),
    field("Config (JSON object)", config, { name: "config", hint: "The whole config: it replaces the current one" }),
    h("div", { className: "actions" }, h("button", { type: "submit" }, "Roll out update")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    let newConfig;
    try {
      newConfig = config.value.trim() ? JSON.parse(config.value) : {};
    } catch (error) {
      fieldError(form, "config", `Not valid JSON: ${error.message}`);
      return;
    }
    if (!newConfig || typeof newConfig !== "object" || Array.isArray(newConfig)) {
      fieldError(form, "config", "Must be a JSON object");
      return;
    }
    const body = {};
    if (model.value.trim() !== current.model) body.model = model.value.trim();
    const wantedImage = image.value.trim();
    if (wantedImage) newConfig.image = wantedImage;
    else delete newConfig.image;
    const oldConfig = current.config || {};
    if (!sameJson(newConfig, oldConfig)) {
      const onlyImage = sameJson({ ...newConfig, image: undefined }, { ...oldConfig, image: undefined }) && wantedImage;
      if (onlyImage) body.image = wantedImage;
      else body.config = newConfig;
    }
    if (!Object.keys(body).length) {
      clear(message, alertBox("Nothing changed.", "info"));
      return;
    }
    try {
      const saved = await api("PATCH", `/api/deployments/${current.id}`, body);
      toast(`Deployment ${saved.name}: update rolling out`);
      fill(saved);
      onSaved(saved);
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
  return form;
}

/** "Stop" (asks first) or "Start", as the deployment is; POST .../stop|start. */
export function stopStartButton(d, onSaved, slot) {
  if (d.stopped) {
    return h("button", {
      type: "button",
      async onclick() {
        const saved = await attempt(slot, () => api("POST", `/api/deployments/${d.id}/start`));
        if (!saved) return;
        toast(`Deployment ${saved.name} starting`);
        onSaved(saved);
      },
    }, "Start");
  }
  return h("button", {
    type: "button", className: "secondary",
    async onclick() {
      const n = d.instances?.length ?? d.replicas;
      const ok = await confirmDialog(
        `Stop deployment ${d.name}? Its ${n} instance${n === 1 ? "" : "s"} stop and release their GPUs; the deployment and its ${d.replicas} replicas are kept for Start.`,
        "Stop");
      if (!ok) return;
      const saved = await attempt(slot, () => api("POST", `/api/deployments/${d.id}/stop`));
      if (!saved) return;
      toast(`Deployment ${saved.name} stopped`);
      onSaved(saved);
    },
  }, "Stop");
}
