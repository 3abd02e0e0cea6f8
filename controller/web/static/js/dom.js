// Small DOM helpers: build elements without innerHTML (no injection), format values.

/** Element `tag` with attributes (on* keys become listeners) and children. */
export function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key === "className" ? "class" : key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function statusBadge(status) {
  return h("span", { className: `badge badge-${status}`, dataset: { status } }, status);
}

export function when(iso) {
  if (!iso) return "never";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function mib(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1024 ? `${(value / 1024).toFixed(1)} GiB` : `${value} MiB`;
}

export function pageHeader(title, ...actions) {
  return h("div", { className: "page-head" }, h("h1", {}, title), h("div", { className: "actions" }, actions));
}

export function alertBox(message, kind = "error") {
  return h("p", { className: `alert alert-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}

/** A labelled form field; `input` gets the id, the error slot is tied by aria-describedby. */
export function field(label, input, { hint, name } = {}) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const error = h("span", { className: "field-error", id: `${id}-error` });
  input.setAttribute("aria-describedby", `${id}-error`);
  return h("div", { className: "field", dataset: { field: name || input.name || "" } },
    h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null, error);
}

/** Show `text` at the field named by `loc` ("config.max_model_len" → "config"). */
export function fieldError(form, loc, text) {
  let wrapper = null;
  for (let parts = loc.split("."); parts.length && !wrapper; parts.pop()) {
    wrapper = form.querySelector(`.field[data-field="${parts.join(".")}"]`);
  }
  if (!wrapper) return false;
  const slot = wrapper.querySelector(".field-error");
  slot.textContent = slot.textContent ? `${slot.textContent}; ${text}` : text;
  wrapper.querySelector("input, select, textarea").setAttribute("aria-invalid", "true");
  return true;
}

/** Ask before a destructive action; resolves true when confirmed. */
export function confirmDialog(message, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    const dialog = h("dialog", { className: "confirm", "aria-label": "Confirm" },
      h("p", {}, message),
      h("form", { method: "dialog", className: "actions" },
        h("button", { value: "cancel", className: "secondary" }, "Cancel"),
        h("button", { value: "confirm", className: "danger" }, confirmLabel)));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("shown"), 3000);
}

/** `fn` at most once per `ms`, after the calls stop (trailing). */
export function debounce(fn, ms = 150) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
