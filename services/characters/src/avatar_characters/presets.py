"""Preset characters from a JSON file, re-read only when the file's mtime changes.

A broken file never takes the presets away: the last good copy keeps being served and the
error is logged. With no good copy at all (start-up) the service refuses to start.
"""

import json
import logging
from pathlib import Path

from pydantic import ValidationError

from avatar_characters.schemas import Character, CharacterFields
from avatar_characters.store import USER_ID_PREFIX

logger = logging.getLogger("avatar.characters.presets")


class PresetError(RuntimeError):
    pass


def load_presets(path: Path) -> dict[str, Character]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["characters"]
        presets: dict[str, Character] = {}
        for entry in entries:
            preset_id = entry.pop("id")
            if preset_id in presets or preset_id.startswith(USER_ID_PREFIX):
                raise ValueError(f"preset id {preset_id!r} is repeated or reserved")
            fields = CharacterFields.model_validate(entry)
            presets[preset_id] = Character(**fields.model_dump(), id=preset_id, is_preset=True)
        return presets
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise PresetError(f"cannot load presets from {path}: {exc}") from exc


class PresetCatalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = path.stat().st_mtime_ns if path.exists() else 0
        self._presets = load_presets(path)  # at start-up a broken file is fatal

    def _refresh(self) -> None:
        try:
            mtime_ns = self.path.stat().st_mtime_ns
        except OSError:
            return  # a file being replaced: keep serving what we have
        if mtime_ns == self._mtime_ns:
            return
        self._mtime_ns = mtime_ns  # a broken version is not re-read on every request
        try:
            self._presets = load_presets(self.path)
            logger.info("presets reloaded", extra={"fields": {"count": len(self._presets)}})
        except PresetError as exc:
            logger.error("presets file is broken; serving the last good copy: %s", exc)

    def all(self) -> list[Character]:
        self._refresh()
        return list(self._presets.values())

    def get(self, preset_id: str) -> Character | None:
        self._refresh()
        return self._presets.get(preset_id)
