// WebSockets to /ws/*: the token goes in the first message (browsers cannot set
// headers on a WebSocket); dropped connections come back with backoff.

import { session, signOut } from "./api.js";

const UNAUTHORIZED = 4401;
const NOT_FOUND = 4404;

/**
 * Open `path` and call `onMessage(json)` per message until `close()`.
 * `onGone(reason)` runs when the server says the resource no longer exists.
 */
export function openSocket(path, { onMessage, onGone, onState } = {}) {
  let socket = null;
  let stopped = false;
  let attempt = 0;
  let timer = null;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${path}`);
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", token: session.token }));
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ready") {
        attempt = 0;
        onState?.("live");
      }
      onMessage?.(message);
    });
    socket.addEventListener("close", (event) => {
      if (stopped) return;
      onState?.("offline");
      if (event.code === UNAUTHORIZED) {
        signOut();
      } else if (event.code === NOT_FOUND) {
        onGone?.(event.reason);
      } else {
        const delay = Math.min(10000, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
        timer = setTimeout(connect, delay);
      }
    });
  }

  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      socket?.close(1000);
    },
  };
}

/** The app-wide /ws/status connection, shared by every page through `listen`. */
const listeners = new Set();
let statusSocket = null;

export function startStatus(onState) {
  stopStatus();
  statusSocket = openSocket("/ws/status", {
    onState,
    onMessage(message) {
      for (const listener of listeners) listener(message);
    },
  });
}

export function stopStatus() {
  statusSocket?.close();
  statusSocket = null;
}

export function listen(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
