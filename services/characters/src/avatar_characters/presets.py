"""Preset characters from a JSON file, re-read only when the file's mtime changes (see
avatar_shared.reloading_file: a broken file keeps the last good presets)."""

import json
from pathlib import Path

from pydantic import ValidationError

from avatar_characters.schemas import Character, CharacterFields
from avatar_characters.store import USER_ID_PREFIX
from avatar_shared.reloading_file import ReloadingFile

SHIPPED_PRESETS = Path(__file__).parent / "data" / "characters.json"


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
    def __init__(self, configured: str) -> None:
        """The presets file CHARACTERS_FILE names, else the one shipped with the service; at
        start-up a broken file is fatal."""
        path = Path(configured) if configured else SHIPPED_PRESETS
        self._file = ReloadingFile(path, load_presets)

    def all(self) -> list[Character]:
        return list(self._file.get().values())

    def get(self, preset_id: str) -> Character | None:
        return self._file.get().get(preset_id)
