// Overview: workers online/offline, every GPU's live utilization and memory,
// deployments by status. Worker heartbeats and status changes arrive on /ws/status.

import { get } from "../api.js";
import { meter } from "../charts.js";
import { clear, debounce, h, mib, pageHeader, statusBadge } from "../dom.js";

export const STATUSES = ["pending", "downloading", "starting", "running", "stopping", "stopped", "error"];

export function gpuMeters(worker) {
  const devices = worker.gpu_info?.devices || [];
  if (!devices.length) return [h("p", { className: "muted" }, "No GPUs (CPU only).")];
  return devices.map((gpu) => h("div", { className: "gpu", dataset: { gpu: `${worker.id}:${gpu.index}` } },
    h("div", { className: "gpu-name" }, `GPU ${gpu.index} · ${gpu.name}`),
    meter("Utilization", (gpu.utilization ?? 0) / 100, `${gpu.utilization ?? 0}%`),
    meter("Memory", (gpu.memory_used ?? 0) / (gpu.memory || 1), `${mib(gpu.memory_used ?? 0)} / ${mib(gpu.memory)}`)));
}

export async function render(ctx) {
  let drawn = false;
  const buffered = [];
  // Subscribed before the first read: deployment changes re-read the list,
  // worker messages (full snapshots of a worker) are applied as they come.
  const reloadDeployments = debounce(async () => {
    const list = await get("/api/deployments?limit=1000");
    deployments.clear();
    for (const d of list.items) deployments.set(d.id, d);
    drawStatuses();
  });
  ctx.onEvent((message) => (drawn ? apply(message) : buffered.push(message)));
  const [workerList, deploymentList] = await Promise.all([
    get("/api/workers"), get("/api/deployments?limit=1000"),
  ]);
  const workers = new Map(workerList.items.map((w) => [w.id, w]));
  const deployments = new Map(deploymentList.items.map((d) => [d.id, d]));

  const workerSummary = h("section", { className: "card", "aria-labelledby": "ov-workers" });
  const statusSummary = h("section", { className: "card", "aria-labelledby": "ov-deployments" });
  const gpuSection = h("section", { className: "card wide", "aria-labelledby": "ov-gpus" });

  function drawWorkers() {
    const all = [...workers.values()];
    const online = all.filter((w) => w.status === "online").length;
    clear(workerSummary, h("h2", { id: "ov-workers" }, "Workers"),
      h("p", { className: "stat" }, h("strong", { dataset: { testid: "workers-online" } }, online), " online · ",
        h("strong", {}, all.length - online), " offline"),
      h("a", { href: "#/workers" }, "All workers"));
  }

  function drawStatuses() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const d of deployments.values()) counts[d.status] = (counts[d.status] || 0) + 1;
    clear(statusSummary, h("h2", { id: "ov-deployments" }, "Deployments"),
      h("ul", { className: "status-counts" }, STATUSES.filter((s) => counts[s]).map((s) =>
        h("li", {}, statusBadge(s), h("span", { dataset: { count: s } }, counts[s])))),
      deployments.size ? null : h("p", { className: "muted" }, "No deployments yet."),
      h("a", { href: "#/deployments" }, "All deployments"));
  }

  function drawGpus() {
    const online = [...workers.values()].filter((w) => w.status === "online");
    clear(gpuSection, h("h2", { id: "ov-gpus" }, "GPUs"),
      online.length ? online.map((w) => h("div", { className: "gpu-worker" },
        h("h3", {}, h("a", { href: `#/workers/${w.id}` }, w.name)), gpuMeters(w)))
        : h("p", { className: "muted" }, "No worker is online."));
  }

  function apply(message) {
    if (message.type === "worker") {
      workers.set(message.worker.id, { ...workers.get(message.worker.id), ...message.worker });
      drawWorkers();
      drawGpus();
    } else if (["deployment", "deployment_deleted", "resync"].includes(message.type)) {
      reloadDeployments();
    }
  }

  drawWorkers();
  drawStatuses();
  drawGpus();
  drawn = true;
  buffered.splice(0).forEach(apply);
  clear(ctx.view, pageHeader("Overview"), h("div", { className: "grid" }, workerSummary, statusSummary, gpuSection));
}
