"""Generation controls: the sampling fields a chat request may send (out of range: 422) and
a character may carry as its defaults. One model, so the ranges are written once."""

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictFloat

from avatar_shared.json_types import integral_float

# The largest seed every server takes (a signed 32-bit integer).
MAX_SEED = 2**31 - 1

_ABSENT = " Absent: the model server's default (the field is not sent)."
StopText = Annotated[str, Field(min_length=1, max_length=50)]
# Optional integers' bounds sit inside their type: given to the field of a `JsonInt | None`,
# they would reach the JSON Schema as "ge"/"le", which no client reads.
TopK = Annotated[int, Field(ge=0, le=1000), BeforeValidator(integral_float), Strict()]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(integral_float), Strict()]


class SamplingControls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_p: StrictFloat | None = Field(
        None,
        gt=0,
        le=1,
        description="Nucleus sampling: the probability mass kept, (0, 1]." + _ABSENT,
    )
    top_k: TopK | None = Field(
        None,
        description="Sample from the k likeliest tokens, 0-1000; 0: off." + _ABSENT,
    )
    min_p: StrictFloat | None = Field(
        None,
        ge=0,
        le=1,
        description="Leave out tokens less likely than this share of the "
        "likeliest one's probability, 0-1." + _ABSENT,
    )
    repetition_penalty: StrictFloat | None = Field(
        None,
        ge=0.5,
        le=2,
        description="Multiplicative penalty on tokens already used "
        "(1: none), 0.5-2; Ollama calls it repeat_penalty." + _ABSENT,
    )
    presence_penalty: StrictFloat | None = Field(
        None,
        ge=-2,
        le=2,
        description="Additive penalty on tokens already used, -2 to 2." + _ABSENT,
    )
    frequency_penalty: StrictFloat | None = Field(
        None,
        ge=-2,
        le=2,
        description="Additive penalty growing with how often a token was "
        "already used, -2 to 2." + _ABSENT,
    )
    seed: Seed | None = Field(
        None,
        description="Sampling seed, 0 to 2^31-1, for repeatable replies "
        "(as far as the model server makes them so)." + _ABSENT,
    )
    stop: list[StopText] | None = Field(
        None,
        max_length=8,
        description="At most 8 stop sequences of 1-50 characters: the reply "
        "ends before the first one the model writes, which is not part of it (nor of the "
        "streamed deltas, nor of the speech)." + _ABSENT,
    )


class GenerationDefaults(SamplingControls):
    """A character's defaults, used where a chat request leaves a control out."""

    temperature: StrictFloat | None = Field(None, ge=0, le=2, description="0-2.")
