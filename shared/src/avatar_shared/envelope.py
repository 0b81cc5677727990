"""The response envelope of API.md, as pydantic models (so OpenAPI shows it) and helpers."""

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody


def ok(data: T) -> Envelope[T]:
    return Envelope[T](data=data)
