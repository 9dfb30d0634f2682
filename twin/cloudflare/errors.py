"""Cloudflare API v4 errors: an HTTP status plus the envelope's ``errors`` list.

Every refusal the emulator makes is an :class:`ApiError`; the server turns it into Cloudflare's
envelope ``{"success": false, "errors": [{"code", "message", "error_chain"?}], "messages": [],
"result": null}`` with its status.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ErrorDetail:
    code: int
    message: str

    def as_json(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class ApiError(Exception):
    status: int
    code: int
    message: str
    chain: tuple[ErrorDetail, ...] = field(default=())

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.code} {self.message}"

    def errors(self) -> list[dict]:
        error = {"code": self.code, "message": self.message}
        if self.chain:
            error["error_chain"] = [detail.as_json() for detail in self.chain]
        return [error]


# ----------------------------------------------------------------------------------- request level
def malformed_json(problem: str) -> ApiError:
    return ApiError(400, 6007, f"Malformed JSON in request body: {problem}")


def no_route() -> ApiError:
    return ApiError(404, 7000, "No route for that URI")


def invalid_identifier(path: str) -> ApiError:
    # What Cloudflare answers for an id that is not an identifier (32 hex digits, or a UUID for tunnels).
    return ApiError(400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?",
                    (ErrorDetail(7000, "No route for that URI"),))


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, 10405, f"Method {method} not allowed for this route")


# ----------------------------------------------------------------------------------- authentication
def missing_credentials() -> ApiError:
    # No Authorization header: Cloudflare falls back to the legacy key scheme and finds no key.
    return ApiError(400, 6003, "Invalid request headers", (ErrorDetail(6103, "Invalid format for X-Auth-Key header"),))


def malformed_authorization() -> ApiError:
    return ApiError(400, 6003, "Invalid request headers",
                    (ErrorDetail(6111, "Invalid format for Authorization header"),))


def authentication_error() -> ApiError:
    # A well-formed token that is not valid, or one that has no access to the account or zone.
    return ApiError(403, 10000, "Authentication error")
