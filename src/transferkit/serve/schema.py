"""The answer of ``POST /predict``, the same for every modality."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, Field

Label = Union[str, int, float, bool]  # a class as classes.json holds it (the user's own int labels stay ints)


class Prediction(BaseModel):
    label: Label
    probability: float = Field(ge=0.0, le=1.0)


class Result(BaseModel):
    input: str = Field(description="The uploaded file's name, or the text")
    predictions: list[Prediction] = Field(description="The top_k labels, most probable first")


class PredictResponse(BaseModel):
    results: list[Result] = Field(description="One per image or text, in request order")
