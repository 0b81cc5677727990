// Speech on request (/api/tts): a reply cut to fit one request.

// /api/tts takes 1,000 characters at most.
const limit = 1000;

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
