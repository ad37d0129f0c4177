"""Errors raised by the DLI hook: one type for the API's refusals, one for a server that could not be reached."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


class DLIError(AirflowException):
    """Base class of this provider's errors."""


class DLIAPIError(DLIError):
    """DLI (or IAM, or the API gateway in front of them) answered with an error status.

    ``error_code``/``error_msg`` come from the body (``DLI.0002``, ``APIGW.0308``...) when it has them;
    ``request_id`` from the body or the ``X-Request-Id`` header, for the vendor's support.
    """

    # AirflowException declares status_code as an HTTPStatus; DLI and gateways may answer codes outside it.
    status_code: int  # type: ignore[assignment]

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id


class DLIConnectionError(DLIError):
    """No answer after every retry: connection refused or reset, DNS failure, or a timeout."""
