// Speech on request (/api/tts): how much text one request takes, and a reply cut to fit.

import { api } from "./api.js";

// Only when the served OpenAPI document cannot be read: tts's limit when this was written.
const FALLBACK_LIMIT = 1000;
let limit = FALLBACK_LIMIT;

export const speechLimit = () => limit;

// The longest `text` /api/tts takes, as the merged OpenAPI document states it (the JSON
// body's schema, followed through its $ref): the page follows the server when it changes.
export async function loadSpeechLimit() {
  try {
    const doc = await api("/api/openapi.json");
    let schema = doc.paths["/api/tts"].post.requestBody.content["application/json"].schema;
    if (schema.$ref) schema = schema.$ref.split("/").slice(1).reduce((node, key) => node[key], doc);
    const max = schema.properties.text.maxLength;
    if (Number.isInteger(max) && max > 0) limit = max;
  } catch { /* no document (or not this shape): the fallback */ }
}

// Longer texts are spoken in parts: whole sentences, as many as fit, cut only when one alone
// is too long.
export function speechParts(text) {
  const parts = [];
  for (const sentence of text.match(/[^.!?。！？\n]+[.!?。！？]*\s*/g) ?? [text]) {
    for (let start = 0; start < sentence.length; start += limit) {
      const piece = sentence.slice(start, start + limit);
      if (parts.length && parts.at(-1).length + piece.length <= limit) parts[parts.length - 1] += piece;
      else parts.push(piece);
    }
  }
  return parts.map((part) => part.trim()).filter(Boolean);
}
