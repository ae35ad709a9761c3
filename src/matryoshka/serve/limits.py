"""What a client may ask of the server, and how a refusal looks.

Every bad request is answered with a 4xx status and one JSON body naming the field at fault::

    {"error": {"message": "dim must be between 1 and d=384, got 512", "type":
     "invalid_request_error", "field": "dim", "param": "dim", "code": null}}

``param`` and ``type`` are OpenAI's names for the same things (its clients read them); ``field``
is the same as ``param``. A field inside a list is named with its position: ``input[3]``,
``vector[17]``, ``funnel[1]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["Limits", "RequestError", "error_body"]


class RequestError(ValueError):
    """A client's mistake: the HTTP status, a message and the request field it concerns.

    Parameters
    ----------
    message : what is wrong and what is accepted
    field : the request field at fault (``"input[2]"``, ``"funnel"``), None for the whole body
    status : the HTTP status, 400 unless said otherwise (401, 404, 413, 415, ...)
    kind : OpenAI's error ``type`` (``invalid_request_error``, ``authentication_error``, ...)
    """

    def __init__(
        self,
        message: str,
        field: str | None = None,
        status: int = 400,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.field, self.status, self.kind, self.code = (
            message, field, status, kind, code
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        """The JSON body of the refusal."""
        return error_body(self.message, self.field, self.kind, self.code)


def error_body(
    message: str,
    field: str | None = None,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {"message", "type", "field", "param", "code"}}``: one shape for every route."""
    return {"error": {"message": message, "type": kind, "field": field, "param": field,
                      "code": code}}  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """The most a single request may ask; anything beyond is a 4xx naming the field.

    Attributes
    ----------
    max_body_bytes : size of a request body (413 beyond)
    max_inputs : texts in one ``/v1/embeddings`` request
    max_text_chars : characters in one text (an input or a search query)
    max_k : results a search returns
    max_stages : stages of a funnel
    max_shortlist : candidates a funnel stage may keep
    """

    max_body_bytes: int = 1 << 20
    max_inputs: int = 128
    max_text_chars: int = 8192
    max_k: int = 1000
    max_stages: int = 6
    max_shortlist: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"limit {f.name} must be a positive integer, got {v!r}")
        if self.max_shortlist < self.max_k:
            raise ValueError(
                f"max_shortlist ({self.max_shortlist}) must be at least max_k ({self.max_k}): "
                "a funnel's last stage keeps the k results"
            )

    def as_dict(self) -> dict[str, int]:
        """The limits by name (what ``/api/info`` shows)."""
        return asdict(self)
