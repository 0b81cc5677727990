// The public API on this same origin, with the caller's cookies (as the frontend does).

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    Object.assign(this, { status, code, retryAfter });
  }
}

// The error envelope of a refused request as an ApiError (or its status line when the body
// is not the envelope).
export async function failure(response) {
  let code = "http_" + response.status, message = response.statusText;
  try {
    ({ code, message } = (await response.json()).error);
  } catch { /* not the envelope: keep the status line */ }
  return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
}

export async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) throw await failure(response);
  const body = await response.json();
  return body.data ?? body; // /api/auth/me and /api/openapi.json answer without the envelope
}

export const sendJson = (method, path, body) => api(path, {
  method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

export const postJson = (path, body) => sendJson("POST", path, body);

// Every item of a listing, through all its pages (each answers next_cursor until the last).
export async function everyItem(path, field) {
  const items = [];
  let cursor = null;
  do {
    const join = path.includes("?") ? "&" : "?"; // the path may have a query of its own
    const page = await api(cursor ? `${path}${join}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...page[field]);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}
