// Sign-in: POST /api/auth/login, then on to the overview.

import { api, ApiError, signIn } from "../api.js";
import { alertBox, clear, field, h } from "../dom.js";

export async function render(ctx) {
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("div", { "aria-live": "assertive" });
  const form = h("form", { className: "card login", novalidate: true },
    h("h1", {}, "Sign in to LMStack"),
    message,
    field("Username", username),
    field("Password", password),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    try {
      const reply = await api("POST", "/api/auth/login", {
        username: username.value, password: password.value,
      });
      signIn(reply.access_token);
      location.hash = "#/";
    } catch (error) {
      const text = error instanceof ApiError && error.status === 401
        ? "Wrong username or password." : error.message;
      clear(message, alertBox(text));
      password.select();
    }
  });
  clear(ctx.view, h("div", { className: "center" }, form));
  username.focus();
}
