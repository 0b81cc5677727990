"""Cuts streamed text into sentences, so speech can start before the reply is finished.

A sentence ends at `.`, `!` or `?` followed by white space (Korean and Latin text), or at
`。`, `！`, `？` or `…` (Japanese and Chinese need no space after them). The very first cut
may come early, at a clause boundary (a comma) once the clause is long enough to be worth
speaking, so the first audio starts sooner.
"""

import re

CJK_END = re.compile(r"[。！？…]+[」』”’)）]*")
LATIN_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
CLAUSE_END = re.compile(r"[,，、](?=\s)")


class SentenceSplitter:
    def __init__(self, first_clause_min_chars: int = 12) -> None:
        self.first_clause_min_chars = first_clause_min_chars
        self._buffer = ""
        self._cuts = 0

    def feed(self, text: str) -> list[str]:
        """The sentences `text` completes (often none)."""
        self._buffer += text
        sentences = []
        while (cut := self._next_cut()) is not None:
            sentence, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if sentence:
                sentences.append(sentence)
                self._cuts += 1
        return sentences

    def flush(self) -> list[str]:
        """Whatever is left when the text ends."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next_cut(self) -> int | None:
        ends = [
            m.end() for m in (CJK_END.search(self._buffer), LATIN_END.search(self._buffer)) if m
        ]
        if ends:
            return min(ends)
        if self._cuts == 0:
            for clause in CLAUSE_END.finditer(self._buffer):
                if clause.end() >= self.first_clause_min_chars:
                    return clause.end()
        return None
