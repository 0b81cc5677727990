"""Where a job's files live: `{ASSETS_DIR}/{user_id}/3d/{job_id}/` holds `input.png` (the
upload, normalised), then `model.glb` and `preview.png` (the result)."""

from pathlib import Path

RESULT_FILES = {"glb": ("model.glb", "model/gltf-binary"), "png": ("preview.png", "image/png")}


class JobFolder:
    def __init__(self, assets_dir: str, user_id: str, job_id: str) -> None:
        self.path = Path(assets_dir) / user_id / "3d" / job_id

    @property
    def input(self) -> Path:
        return self.path / "input.png"

    def result(self, kind: str) -> Path:
        return self.path / RESULT_FILES[kind][0]

    def write(self, name: str, data: bytes) -> None:
        """Whole or not at all: written beside, then renamed into place."""
        self.path.mkdir(parents=True, exist_ok=True)
        part = self.path / f".{name}.part"
        part.write_bytes(data)
        part.replace(self.path / name)
