// API keys: create (the key is shown once, with a copy button), list with their
// limits and quota bars, edit limits, delete.

import { api, ApiError, get } from "../api.js";
import { alertBox, clear, confirmDialog, field, h, pageHeader, toast, when } from "../dom.js";
import { editLimits, limitsCell } from "../limits.js";

export async function render(ctx) {
  const body = h("tbody");
  const created = h("div", { "aria-live": "polite" });
  const name = h("input", { name: "name", required: true, placeholder: "my-app", autocomplete: "off" });
  const message = h("div", { "aria-live": "assertive" });

  async function load() {
    const list = await get("/api/api-keys");
    clear(body, list.items.map((key) => h("tr", { dataset: { id: key.id } },
      h("td", {}, key.name),
      h("td", {}, h("code", {}, key.hint)),
      h("td", {}, key.allowed_deployments ? key.allowed_deployments.join(", ") : "all"),
      h("td", {}, when(key.created_at)),
      h("td", {}, when(key.last_used)),
      limitsCell(key.name, key),
      h("td", {}, h("div", { className: "actions" }, h("button", {
        type: "button", className: "secondary small", "aria-label": `Edit limits of key ${key.name}`,
        async onclick() {
          const saved = await editLimits(`Limits of key ${key.name}`, key.limits,
            (limits) => api("PATCH", `/api/api-keys/${key.id}`, { limits }));
          if (!saved) return;
          toast(`Limits of ${key.name} saved`);
          await load();
        },
      }, "Limits"), h("button", {
        type: "button", className: "danger small", "aria-label": `Delete key ${key.name}`,
        async onclick() {
          if (!(await confirmDialog(`Delete API key ${key.name}? Applications using it stop working at once.`))) return;
          await api("DELETE", `/api/api-keys/${key.id}`);
          toast(`API key ${key.name} deleted`);
          await load();
        },
      }, "Delete"))))));
    if (!list.items.length) clear(body, h("tr", {}, h("td", { colspan: 7, className: "muted" }, "No API keys yet.")));
  }

  const form = h("form", { className: "card inline-form", novalidate: true },
    h("h2", {}, "Create an API key"), message, field("Name", name),
    h("button", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    try {
      const key = await api("POST", "/api/api-keys", { name: name.value.trim() });
      name.value = "";
      const value = h("input", { readonly: true, value: key.key, className: "secret", "aria-label": "New API key", id: "new-key" });
      clear(created, h("div", { className: "card reveal", role: "region", "aria-label": "New API key" },
        h("p", {}, h("strong", {}, `Key ${key.name} created. `), "Copy it now: it is shown only once."),
        h("div", { className: "copy-row" }, value, h("button", {
          type: "button",
          async onclick(event) {
            value.select();
            try {
              await navigator.clipboard.writeText(key.key);
            } catch {
              document.execCommand?.("copy");
            }
            event.target.textContent = "Copied";
          },
        }, "Copy"))));
      await load();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      clear(message, alertBox(error.errors.map((e) => e.msg).join("; ") || error.message));
    }
  });
  await load();
  clear(ctx.view, pageHeader("API keys"),
    h("p", { className: "muted" }, "Keys call the OpenAI-compatible gateway at /v1.",
      ctx.isAdmin ? " As an admin you see every user's keys." : ""),
    form, created,
    h("div", { className: "scroll" }, h("table", { className: "table", "aria-label": "API keys" },
      h("thead", {}, h("tr", {}, ["Name", "Key", "Deployments", "Created", "Last used", "Limits", ""].map((c) => h("th", { scope: "col" }, c)))),
      body)));
}
