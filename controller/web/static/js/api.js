// The REST API with the signed-in user's bearer token (kept in sessionStorage:
// it ends with the browser tab, and no cookie means no CSRF surface).

const TOKEN_KEY = "lmstack.token";

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  user: null,
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.errors = body?.errors || [];
  }
}

export function signIn(token) {
  session.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function signOut() {
  session.token = null;
  session.user = null;
  sessionStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new Event("lmstack:signedout"));
}

export function authHeaders() {
  return session.token ? { Authorization: `Bearer ${session.token}` } : {};
}

export async function api(method, path, body) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && session.token && path !== "/api/auth/login") {
    signOut();
  }
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      // not JSON: the status says enough
    }
    throw new ApiError(response.status, data);
  }
  return response.status === 204 ? null : response.json();
}

export const get = (path) => api("GET", path);
