// Usage: gateway tokens and requests per day, per API key or per deployment,
// drawn as line charts, with the totals in a table; optionally between two dates.

import { get } from "../api.js";
import { formatNumber, lineChart } from "../charts.js";
import { alertBox, clear, field, h, pageHeader } from "../dom.js";

export async function render(ctx) {
  const [firstUsage, keys] = await Promise.all([get("/api/usage"), get("/api/api-keys")]);
  let usage = firstUsage;
  const keyNames = new Map(keys.items.map((k) => [k.id, k.name]));
  const groupBy = h("select", { name: "group" },
    h("option", { value: "deployment" }, "Deployment"), h("option", { value: "key" }, "API key"));
  const start = h("input", { type: "date", name: "start" });
  const end = h("input", { type: "date", name: "end" });
  const problem = h("div");
  const charts = h("div", { className: "chart-grid" });
  const table = h("div", { className: "scroll" });

  const label = (row) => (groupBy.value === "key"
    ? (row.api_key_id ? keyNames.get(row.api_key_id) || row.api_key_id.slice(0, 8) : "signed-in sessions")
    : row.deployment_name);

  function draw() {
    const days = [...new Set(usage.items.map((r) => r.date))].sort();
    const groups = new Map();
    for (const row of usage.items) {
      const name = label(row);
      if (!groups.has(name)) groups.set(name, { tokens: new Map(), requests: new Map(), total: [0, 0] });
      const g = groups.get(name);
      g.tokens.set(row.date, (g.tokens.get(row.date) || 0) + row.total_tokens);
      g.requests.set(row.date, (g.requests.get(row.date) || 0) + row.requests);
      g.total[0] += row.requests;
      g.total[1] += row.total_tokens;
    }
    const series = (metric) => [...groups].map(([name, g]) => ({ name, values: days.map((d) => g[metric].get(d) || 0) }));
    clear(charts, days.length
      ? [lineChart({ title: "Tokens per day", series: series("tokens"), labels: days }),
        lineChart({ title: "Requests per day", series: series("requests"), labels: days })]
      : h("p", { className: "muted" }, "No gateway traffic recorded yet."));
    clear(table, h("table", { className: "table", "aria-label": "Usage totals" },
      h("thead", {}, h("tr", {}, [groupBy.value === "key" ? "API key" : "Deployment", "Requests", "Tokens"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, [...groups].map(([name, g]) => h("tr", {}, h("td", {}, name), h("td", {}, formatNumber(g.total[0])), h("td", {}, formatNumber(g.total[1]))))),
      h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"), h("td", {}, formatNumber(usage.totals.requests)), h("td", {}, formatNumber(usage.totals.total_tokens))))));
  }

  // Each change asks again; only the answer to the latest question is drawn.
  let asked = 0;
  async function reload() {
    const question = ++asked;
    const params = new URLSearchParams();
    if (start.value) params.set("start", start.value);
    if (end.value) params.set("end", end.value);
    try {
      const answer = await get(`/api/usage${params.size ? `?${params}` : ""}`);
      if (question !== asked) return;
      usage = answer;
      clear(problem);
      draw();
    } catch (error) {
      if (question === asked) clear(problem, alertBox(error.message));
    }
  }

  groupBy.addEventListener("change", draw);
  start.addEventListener("change", reload);
  end.addEventListener("change", reload);
  draw();
  clear(ctx.view, pageHeader("Usage"),
    h("p", { className: "muted" }, ctx.isAdmin ? "Everyone's gateway traffic." : "Your gateway traffic."),
    h("form", { className: "filters", onsubmit: (e) => e.preventDefault() },
      field("Group by", groupBy), field("From", start), field("To", end)),
    problem, h("section", { className: "card" }, charts), h("section", { className: "card" }, table));
}
