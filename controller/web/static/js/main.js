// The dashboard's shell: sign-in state, navigation and a hash router.
// Each page module exports `render(ctx, ...params)`; `ctx.view` is the page's own
// container in <main>,
// `ctx.onEvent(fn)` receives /ws/status messages and `ctx.onCleanup(fn)` runs
// when the user leaves the page (sockets closed, timers cleared).

import { ApiError, get, session, signOut } from "./api.js";
import { clear, h } from "./dom.js";
import { listen, startStatus, stopStatus } from "./live.js";
import * as deployments from "./pages/deployments.js";
import * as keys from "./pages/keys.js";
import * as login from "./pages/login.js";
import * as overview from "./pages/overview.js";
import * as playground from "./pages/playground.js";
import * as usage from "./pages/usage.js";
import * as users from "./pages/users.js";
import * as workers from "./pages/workers.js";

const ROUTES = [
  [/^\/$/, overview.render, "Overview"],
  [/^\/deployments$/, deployments.renderList, "Deployments"],
  [/^\/deployments\/new$/, deployments.renderCreate, "New deployment"],
  [/^\/deployments\/([0-9a-f-]+)$/, deployments.renderDetail, "Deployment"],
  [/^\/workers$/, workers.renderList, "Workers"],
  [/^\/workers\/([0-9a-f-]+)$/, workers.renderDetail, "Worker"],
  [/^\/keys$/, keys.render, "API keys"],
  [/^\/users$/, users.render, "Users"],
  [/^\/usage$/, usage.render, "Usage"],
  [/^\/playground$/, playground.render, "Playground"],
];

const NAV = [
  ["#/", "Overview"],
  ["#/deployments", "Deployments"],
  ["#/workers", "Workers"],
  ["#/keys", "API keys"],
  ["#/users", "Users", { admin: true }],
  ["#/usage", "Usage"],
  ["#/playground", "Playground"],
];

const main = document.getElementById("main");
let cleanups = [];

function leavePage() {
  for (const cleanup of cleanups.splice(0)) {
    try {
      cleanup();
    } catch (error) {
      console.error(error);
    }
  }
}

function renderNav(path) {
  const nav = document.getElementById("nav");
  const links = NAV.filter(([, , options]) => !options?.admin || session.user?.is_admin).map(([href, label]) => {
    const current = href === `#${path}` || (href !== "#/" && path.startsWith(href.slice(1)));
    return h("a", { href, "aria-current": current ? "page" : null }, label);
  });
  clear(nav, links);
}

async function loadUser() {
  if (session.user || !session.token) return;
  session.user = await get("/api/auth/me");
  document.getElementById("whoami").textContent =
    `${session.user.username}${session.user.is_admin ? " (admin)" : ""}`;
  startStatus((state) => document.body.classList.toggle("disconnected", state !== "live"));
}

async function route() {
  leavePage();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const topbar = document.getElementById("topbar");
  if (!session.token || path === "/login") {
    topbar.hidden = true;
    stopStatus();
    if (!session.token && path !== "/login") {
      location.replace("#/login");
      return;
    }
    await login.render(context());
    return;
  }
  try {
    await loadUser();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // signed out
    clear(main, h("p", { className: "alert alert-error", role: "alert" }, `Cannot reach the controller: ${error.message}`));
    return;
  }
  topbar.hidden = false;
  renderNav(path);
  for (const [pattern, render, title] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      document.title = `${title} · LMStack`;
      const ctx = context();
      try {
        await render(ctx, ...match.slice(1));
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return;
        clear(ctx.view, h("p", { className: "alert alert-error", role: "alert" }, error.message));
      }
      if (ctx.view.isConnected) main.focus({ preventScroll: true });
      return;
    }
  }
  clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

// Each page renders into a container of its own, put in <main> now: when the
// user moves on while the page still loads or refreshes, its late writes land
// in a container that is no longer in the document, never over the next page.
function context() {
  const view = h("div", { className: "page" }, h("p", { className: "loading" }, "Loading…"));
  clear(main, view);
  return {
    view,
    onCleanup(fn) {
      cleanups.push(fn);
    },
    onEvent(fn) {
      cleanups.push(listen(fn));
    },
    isAdmin: Boolean(session.user?.is_admin),
  };
}

window.addEventListener("hashchange", route);
window.addEventListener("lmstack:signedout", () => {
  stopStatus();
  location.hash = "#/login";
  route();
});
document.getElementById("signout").addEventListener("click", () => signOut());
route();
