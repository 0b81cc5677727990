"""Where a job's files live: `{ASSETS_DIR}/{user_id}/3d/{job_id}/` holds `input.png` (the
upload, decoded reduced and stored as PNG) while the job waits or runs, then `model.glb` and
`preview.png` (the result) once the input is removed. `retention` bounds them all."""

from pathlib import Path

RESULT_FILES = {"glb": ("model.glb", "model/gltf-binary"), "png": ("preview.png", "image/png")}
INPUT = "input.png"


class JobFolder:
    def __init__(self, assets_dir: str, user_id: str, job_id: str) -> None:
        self.path = Path(assets_dir) / user_id / "3d" / job_id

    @property
    def input(self) -> Path:
        return self.path / INPUT

    def result(self, kind: str) -> Path:
        return self.path / RESULT_FILES[kind][0]

    def write(self, name: str, data: bytes) -> None:
        """Whole or not at all: written beside, then renamed into place."""
        self.path.mkdir(parents=True, exist_ok=True)
        part = self.path / f".{name}.part"
        part.write_bytes(data)
        part.replace(self.path / name)

    def size(self) -> int:
        return folder_size(self.path)

    def drop_input(self) -> None:
        """The input is the job's only: it goes once the job has its result."""
        self.input.unlink(missing_ok=True)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0


def job_folders(assets_dir: str) -> list[tuple[Path, str, int, float]]:
    """Every job folder on disk (for the retention index when Redis lost it): its path, its
    user (the holder it is charged to from then on), bytes and when last written. An input
    left beside a finished job's result (by a worker that died between the two) goes now."""
    found = []
    for folder in Path(assets_dir).glob("*/3d/*"):
        if not folder.is_dir():
            continue
        if (folder / RESULT_FILES["glb"][0]).is_file():
            (folder / INPUT).unlink(missing_ok=True)
        user = folder.parent.parent.name
        found.append((folder, user, folder_size(folder), folder.stat().st_mtime))
    return found
