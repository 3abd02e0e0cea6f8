// Workers: the list (status and GPUs live, labels) and a worker's detail with
// its labels, per-GPU live charts (utilization, memory: the samples seen since
// the page opened), its containers (asked of the agent) and its deployments.

import { ApiError, get } from "../api.js";
import { lineChart } from "../charts.js";
import { alertBox, clear, h, mib, pageHeader, statusBadge, when } from "../dom.js";
import { gpuMeters } from "./overview.js";

const HISTORY = 60;

/** The agent's labels (--label key=value) as chips; "none" without any. */
export function labelChips(worker) {
  const entries = Object.entries(worker.labels || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h("span", { className: "muted" }, "none");
  return h("ul", { className: "labels", "aria-label": `Labels of ${worker.name}` },
    entries.map(([key, value]) => h("li", { className: "label", dataset: { label: key } }, `${key}=${value}`)));
}

export async function renderList(ctx) {
  const workers = new Map((await get("/api/workers")).items.map((w) => [w.id, w]));
  const body = h("tbody");

  function draw() {
    clear(body, [...workers.values()].map((w) => h("tr", { dataset: { id: w.id } },
      h("td", {}, h("a", { href: `#/workers/${w.id}` }, w.name)),
      h("td", {}, statusBadge(w.status)),
      h("td", {}, w.advertise_address || "–"),
      h("td", {}, labelChips(w)),
      h("td", {}, String(w.gpu_info?.count ?? 0)),
      h("td", {}, (w.gpu_info?.devices || []).map((g) => `${g.utilization ?? 0}%`).join(" · ") || "–"),
      h("td", {}, when(w.last_heartbeat)))));
  }

  ctx.onEvent((message) => {
    if (message.type === "worker") {
      workers.set(message.worker.id, { ...workers.get(message.worker.id), ...message.worker });
      draw();
    }
  });
  draw();
  clear(ctx.view, pageHeader("Workers"),
    workers.size ? null : h("p", { className: "muted" }, "No worker has joined yet. Start lmstack-agent on a GPU host."),
    h("div", { className: "scroll" }, h("table", { className: "table", "aria-label": "Workers" },
      h("thead", {}, h("tr", {}, ["Name", "Status", "Address", "Labels", "GPUs", "Utilization", "Last heartbeat"].map((c) => h("th", { scope: "col" }, c)))),
      body)));
}

export async function renderDetail(ctx, id) {
  let worker = await get(`/api/workers/${id}`);
  const history = new Map(); // gpu index -> {util: [], mem: []}
  const header = h("div");
  const meters = h("section", { className: "card", "aria-label": "GPUs now" });
  const charts = h("section", { className: "card", "aria-label": "GPU history" });
  const containers = h("section", { className: "card" }, h("h2", {}, "Containers"), h("p", { className: "muted" }, "Loading…"));

  function sample() {
    for (const gpu of worker.gpu_info?.devices || []) {
      const entry = history.get(gpu.index) || { util: [], mem: [] };
      entry.util.push(gpu.utilization ?? 0);
      entry.mem.push(gpu.memory ? (100 * (gpu.memory_used ?? 0)) / gpu.memory : 0);
      entry.util.splice(0, entry.util.length - HISTORY);
      entry.mem.splice(0, entry.mem.length - HISTORY);
      history.set(gpu.index, entry);
    }
  }

  function draw() {
    clear(header, pageHeader(worker.name, statusBadge(worker.status)),
      worker.runtime_error ? alertBox(`Container runtime: ${worker.runtime_error}`) : null,
      h("dl", { className: "facts" },
        h("dt", {}, "Address"), h("dd", {}, worker.advertise_address || "–"),
        h("dt", {}, "Agent"), h("dd", {}, worker.agent_version || "–"),
        h("dt", {}, "Labels"), h("dd", {}, labelChips(worker)),
        h("dt", {}, "Host"), h("dd", {}, `${worker.system_info?.hostname || "–"} · ${worker.system_info?.cpu_count ?? "?"} CPUs · ${mib(Math.round((worker.system_info?.memory_total || 0) / 1048576))}`),
        h("dt", {}, "Last heartbeat"), h("dd", {}, when(worker.last_heartbeat))));
    clear(meters, h("h2", {}, "GPUs"), gpuMeters(worker));
    const indices = [...history.keys()];
    clear(charts, h("h2", {}, "GPU history"),
      indices.length ? h("div", { className: "chart-grid" },
        lineChart({ title: "Utilization (%)", max: 100, unit: "%", series: indices.map((i) => ({ name: `GPU ${i}`, values: history.get(i).util })) }),
        lineChart({ title: "Memory used (%)", max: 100, unit: "%", series: indices.map((i) => ({ name: `GPU ${i}`, values: history.get(i).mem })) }))
        : h("p", { className: "muted" }, "No GPU statistics."));
  }

  async function loadContainers() {
    try {
      const list = await get(`/api/workers/${id}/containers`);
      clear(containers, h("h2", {}, "Containers"), list.containers.length
        ? h("div", { className: "scroll" }, h("table", { className: "table", "aria-label": "Containers" },
          h("thead", {}, h("tr", {}, ["Name", "State", "Image", "Port", "Deployment", "Instance"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, list.containers.map((c) => h("tr", {},
            h("td", {}, c.name, c.foreign ? h("small", { title: "Another cluster's: never stopped or removed here" }, " (foreign)") : null),
            h("td", {}, statusBadge(c.status)), h("td", {}, c.image),
            h("td", {}, c.port ?? "–"),
            h("td", {}, c.deployment_id ? h("a", { href: `#/deployments/${c.deployment_id}` }, c.deployment_id.slice(0, 8)) : "–"),
            h("td", {}, c.instance_id ? h("code", { title: c.instance_id }, c.instance_id.slice(0, 8)) : "–"))))))
        : h("p", { className: "muted" }, "No LMStack containers on this worker."));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      clear(containers, h("h2", {}, "Containers"), alertBox(error.message, "info"));
    }
  }

  ctx.onEvent((message) => {
    if (message.type === "worker" && message.worker.id === id) {
      worker = { ...worker, ...message.worker };
      sample();
      draw();
      if (message.change === "online") loadContainers();
    }
  });
  sample();
  draw();
  const deployments = h("section", { className: "card" }, h("h2", {}, "Deployments"),
    worker.deployments.length
      ? h("ul", {}, worker.deployments.map((d) => h("li", {}, h("a", { href: `#/deployments/${d.id}` }, d.name), " ", statusBadge(d.status))))
      : h("p", { className: "muted" }, "None."));
  clear(ctx.view, h("p", { className: "crumbs" }, h("a", { href: "#/workers" }, "Workers"), " / "),
    header, h("div", { className: "grid" }, meters, charts), containers, deployments);
  await loadContainers();
}
