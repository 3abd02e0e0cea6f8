// Limits of API keys and users: a one-line summary, a quota bar for a token
// budget, and a dialog that edits all five (an empty field is unlimited).

import { ApiError } from "./api.js";
import { alertBox, clear, field, h, when } from "./dom.js";

const NUMBERS = [
  ["rpm", "Requests per minute"],
  ["tpm", "Tokens per minute"],
  ["max_parallel", "Parallel requests"],
  ["token_budget", "Token budget"],
];

/** "60 rpm · 2 parallel · 5000 tokens/month", or "none". */
export function limitsText(limits) {
  const parts = [];
  if (limits.rpm) parts.push(`${limits.rpm} rpm`);
  if (limits.tpm) parts.push(`${limits.tpm} tpm`);
  if (limits.max_parallel) parts.push(`${limits.max_parallel} parallel`);
  if (limits.token_budget) parts.push(`${limits.token_budget} tokens/${limits.budget_period}`);
  return parts.length ? parts.join(" · ") : "none";
}

/** The budget used this period as a bar; nothing without a budget. */
export function quotaBar(owner, item) {
  const budget = item.budget;
  if (!budget) return null;
  const total = item.limits.token_budget;
  const percent = Math.min(100, Math.round((budget.used / total) * 100));
  return h("div", { className: "quota" },
    h("div", {
      className: "meter", role: "progressbar", "aria-label": `Token budget of ${owner}`,
      "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": Math.min(budget.used, total),
      title: `resets ${when(budget.resets_at)}`,
    }, h("div", { className: `meter-fill${percent >= 90 ? " hot" : ""}`, style: `width: ${percent}%` })),
    h("small", { className: "meter-text" }, `${budget.used} / ${total} used, ${budget.remaining} left this ${budget.period}`));
}

/** The limits cell of a table row: the summary and, with a budget, its bar. */
export function limitsCell(owner, item) {
  return h("td", {}, h("span", { dataset: { limits: owner } }, limitsText(item.limits)), quotaBar(owner, item));
}

/** Edit `limits` in a modal; `save(body)` sends them and may throw an ApiError,
 * shown in the dialog. Resolves true once saved, false when cancelled. */
export function editLimits(title, limits, save) {
  return new Promise((resolve) => {
    const inputs = Object.fromEntries(NUMBERS.map(([name]) => [name,
      h("input", { name, type: "number", min: 1, step: 1, inputmode: "numeric", value: limits[name] ?? "", placeholder: "unlimited" })]));
    const period = h("select", { name: "budget_period" },
      ["month", "day"].map((p) => h("option", { value: p, selected: limits.budget_period === p }, `per UTC ${p}`)));
    const message = h("div", { "aria-live": "assertive" });
    const form = h("form", { className: "form", novalidate: true },
      h("h2", {}, title), message,
      NUMBERS.map(([name, label]) => field(label, inputs[name])),
      field("Budget period", period),
      h("div", { className: "actions" },
        h("button", { type: "button", className: "secondary", onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "submit" }, "Save limits")));
    const dialog = h("dialog", { className: "confirm", "aria-label": title }, form);
    let saved = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clear(message);
      try {
        await save(body(inputs, period));
        saved = true;
        dialog.close();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        const errors = error.errors.map((e) => `${e.loc.at(-1)}: ${e.msg}`);
        clear(message, alertBox(errors.length ? errors.join("; ") : error.message));
      }
    });
    dialog.addEventListener("close", () => {
      resolve(saved);
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

function body(inputs, period) {
  const limits = {};
  for (const [name, input] of Object.entries(inputs)) {
    const text = input.value.trim();
    // Sent as typed when it is not a whole number, so the API names the field.
    if (text) limits[name] = /^\d+$/.test(text) ? Number(text) : text;
  }
  if (limits.token_budget !== undefined) limits.budget_period = period.value;
  return limits;
}
