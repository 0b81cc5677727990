"""What a 3D backend is to the worker: a picture and options in, a GLB and a preview out,
reporting progress as it goes."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from avatar_gen3d.schemas import Gen3dOptions

# The steps a user sees, in order, with the progress each starts at.
ANALYZING = (5, "이미지 분석 중...")
REMOVING_BACKGROUND = (20, "배경 제거 중...")
MESHING = (40, "3D 메쉬 생성 중...")
TEXTURING = (70, "텍스처 적용 중...")
SAVING = (90, "GLB 파일 저장 중...")


class BackendFailed(Exception):
    """A failure another attempt may not meet (the server down, slow or wrong); the message
    is for people and becomes the job's `error` when no attempts are left."""


class BackendGaveUp(BackendFailed):
    """A failure another attempt would only make worse (the GPU server still runs the job
    and would be sent it again): the job fails at once, not retried."""


Report = Callable[[tuple[int, str]], Awaitable[None]]


class Notes(Protocol):
    """What a backend keeps across a job's attempts (the worker keeps it in the job's record,
    so an attempt after a crash or a retry finds it)."""

    def get(self, name: str) -> Any: ...

    async def keep(self, **values: Any) -> None: ...


@dataclass
class FreshNotes:
    """Notes of a job with no earlier attempt that keeps them only in memory (for a
    backend used outside the queue)."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values.get(name)

    async def keep(self, **values: Any) -> None:
        self.values.update(values)


@dataclass(frozen=True)
class Model:
    glb: bytes
    preview_png: bytes


class Backend(Protocol):
    name: str

    async def generate(
        self, picture: Image.Image, options: Gen3dOptions, report: Report, notes: Notes
    ) -> Model:
        """Raises BadInput for a picture it cannot use and BackendGaveUp when trying again
        would do harm (neither is retried); any other error is taken as transient and
        retried."""
        ...
