// Playground: chat with a running deployment through the gateway (/v1), the
// reply streamed token by token (fetch + a ReadableStream SSE reader).

import { authHeaders, get } from "../api.js";
import { alertBox, clear, field, h, pageHeader } from "../dom.js";

/** Yield each `data:` payload of an SSE response body. */
async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

export async function render(ctx) {
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("model");
  const running = (await get("/api/deployments?status=running&limit=1000")).items;
  const model = h("select", { name: "model" }, running.map((d) => h("option", { value: d.name, selected: d.name === wanted }, d.name)));
  const system = h("input", { name: "system", placeholder: "You are a helpful assistant." });
  const prompt = h("textarea", { name: "prompt", rows: 3, placeholder: "Ask something…", required: true });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", className: "secondary", disabled: true }, "Stop");
  const transcript = h("ol", { className: "transcript", "aria-label": "Conversation", "aria-live": "polite" });
  const history = [];
  let controller = null;
  ctx.onCleanup(() => controller?.abort());
  stop.addEventListener("click", () => controller?.abort());

  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  const form = h("form", { className: "card chat-form", novalidate: true },
    field("Deployment", model), field("System prompt (optional)", system),
    field("Message", prompt, { hint: "Ctrl+Enter sends" }),
    h("div", { className: "actions" }, stop, send));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || !model.value) return;
    prompt.value = "";
    history.push({ role: "user", content: text });
    transcript.append(h("li", { className: "msg user" }, h("span", { className: "who" }, "You"), h("p", {}, text)));
    const reply = h("p", { className: "streaming" });
    const item = h("li", { className: "msg assistant" }, h("span", { className: "who" }, model.value), reply);
    transcript.append(item);
    send.disabled = true;
    stop.disabled = false;
    controller = new AbortController();
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }, ...history] : [...history];
    let answer = "";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { ...authHeaders(), "Content-Type": "application/json" },
        body: JSON.stringify({ model: model.value, messages, stream: true }),
        signal: controller.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new Error(body?.error?.message || `HTTP ${response.status}`);
      }
      for await (const data of sseData(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "the engine failed");
        const delta = chunk.choices?.[0]?.delta?.content || "";
        answer += delta;
        reply.textContent = answer;
        item.scrollIntoView({ block: "end" });
      }
      history.push({ role: "assistant", content: answer });
    } catch (error) {
      if (error.name !== "AbortError") item.append(alertBox(error.message));
      if (answer) history.push({ role: "assistant", content: answer });
    } finally {
      reply.classList.remove("streaming");
      send.disabled = false;
      stop.disabled = true;
      controller = null;
      prompt.focus();
    }
  });

  clear(ctx.view, pageHeader("Playground"),
    running.length ? null : alertBox("No deployment is running. Create one, then come back.", "info"),
    transcript, form);
  prompt.focus();
}
