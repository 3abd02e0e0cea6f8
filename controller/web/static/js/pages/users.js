// Users (admins only; the server refuses everyone else with 403 too): add, delete,
// and their limits, which hold for all their keys.

import { api, ApiError, get, session } from "../api.js";
import { alertBox, clear, confirmDialog, field, h, pageHeader, toast, when } from "../dom.js";
import { editLimits, limitsCell } from "../limits.js";

export async function render(ctx) {
  if (!ctx.isAdmin) {
    clear(ctx.view, pageHeader("Users"), alertBox("Only admins manage users."));
    return;
  }
  const body = h("tbody");
  const message = h("div", { "aria-live": "assertive" });
  const username = h("input", { name: "username", required: true, autocomplete: "off" });
  const email = h("input", { name: "email", type: "email", autocomplete: "off" });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
  const isAdmin = h("input", { name: "is_admin", type: "checkbox" });

  async function load() {
    const list = await get("/api/users");
    clear(body, list.items.map((user) => h("tr", { dataset: { id: user.id } },
      h("td", {}, user.username), h("td", {}, user.email || "–"),
      h("td", {}, user.is_admin ? "admin" : "user"), h("td", {}, when(user.created_at)),
      limitsCell(user.username, user),
      h("td", {}, h("div", { className: "actions" }, h("button", {
        type: "button", className: "secondary small", "aria-label": `Edit limits of user ${user.username}`,
        async onclick() {
          const saved = await editLimits(`Limits of user ${user.username}`, user.limits,
            (limits) => api("PATCH", `/api/users/${user.id}`, { limits }));
          if (!saved) return;
          toast(`Limits of ${user.username} saved`);
          await load();
        },
      }, "Limits"), user.id === session.user.id ? null : h("button", {
        type: "button", className: "danger small", "aria-label": `Delete user ${user.username}`,
        async onclick() {
          if (!(await confirmDialog(`Delete user ${user.username} and their API keys?`))) return;
          try {
            await api("DELETE", `/api/users/${user.id}`);
            toast(`User ${user.username} deleted`);
          } catch (error) {
            toast(error.message);
          }
          await load();
        },
      }, "Delete"))))));
  }

  const form = h("form", { className: "card form", novalidate: true },
    h("h2", {}, "Add a user"), message,
    field("Username", username), field("E-mail (optional)", email), field("Password", password),
    h("div", { className: "field check" }, isAdmin, h("label", { for: "is-admin" }, "Administrator")),
    h("button", { type: "submit" }, "Add user"));
  isAdmin.id = "is-admin";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    const payload = { username: username.value.trim(), password: password.value, is_admin: isAdmin.checked };
    if (email.value.trim()) payload.email = email.value.trim();
    try {
      await api("POST", "/api/users", payload);
      form.reset();
      toast(`User ${payload.username} added`);
      await load();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      clear(message, alertBox(error.errors.length ? error.errors.map((e) => `${e.loc.at(-1)}: ${e.msg}`).join("; ") : error.message));
    }
  });
  await load();
  clear(ctx.view, pageHeader("Users"),
    h("div", { className: "scroll" }, h("table", { className: "table", "aria-label": "Users" },
      h("thead", {}, h("tr", {}, ["Username", "E-mail", "Role", "Created", "Limits", ""].map((c) => h("th", { scope: "col" }, c)))),
      body)),
    form);
}
