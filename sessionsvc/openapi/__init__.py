"""The OpenAPI 3.1 document: flasgger template and per-operation specs.

Views carry their operation with :func:`spec`; flasgger builds
``/apispec.json`` from the real routes, so a route without a spec shows up
as undocumented rather than silently missing. Every number and vocabulary
the code enforces (name length, body limit, page sizes, reasons, event
types, risk flags) comes from the code's own constants. A route's
trailing-slash alias (``/api/v1/sessions/``) is served but not documented:
each operation appears once, under one ``operationId``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flasgger import swag_from
from werkzeug.routing import Rule

from .audit import AUDIT_OPERATIONS
from .operations import OPERATIONS as _OPERATIONS
from .schemas import SCHEMAS

F = TypeVar("F", bound=Callable[..., Any])

#: Every operation by name (``operationId``).
OPERATIONS: dict[str, dict[str, Any]] = {**_OPERATIONS, **AUDIT_OPERATIONS}


#: The attribute of a view that names its operation (see :func:`operation_of`).
_OPERATION = "sessionsvc_operation"


def spec(operation: str) -> Callable[[F], F]:
    """Attach the named operation's OpenAPI spec to a view; the name is its ``operationId``."""
    swag: Callable[[F], F] = swag_from({"operationId": operation, **OPERATIONS[operation]})

    def decorate(view: F) -> F:
        # functools.wraps copies it to the wrappers, as it does flasgger's attributes.
        setattr(view, _OPERATION, operation)
        return swag(view)

    return decorate


def operation_of(view: Callable[..., Any]) -> str | None:
    """The ``operationId`` of a view of sessionsvc's; ``None`` for any other view."""
    operation = getattr(view, _OPERATION, None)
    return operation if isinstance(operation, str) else None


def documented(rule: Rule) -> bool:
    """Whether flasgger documents a URL rule: not a trailing-slash alias of
    another rule of the same view."""
    if not rule.rule.endswith("/") or rule.map is None:
        return True
    bare = rule.rule.rstrip("/")
    return not any(other.rule == bare for other in rule.map.iter_rules(rule.endpoint))


#: The OpenAPI version served; flasgger writes it into the document.
OPENAPI_VERSION = "3.1.0"

#: flasgger's template: everything but the paths.
TEMPLATE: dict[str, Any] = {
    "info": {
        "title": "sessionsvc",
        "description": "See every device you are signed in on, and sign any of them out: "
        "revocation bites on the very next request.",
        "version": "1",
    },
    "tags": [
        {"name": "sessions", "description": "Your own sessions and security events"},
        {"name": "auth", "description": "Sign in, refresh and sign out (standalone service)"},
        {"name": "admin", "description": "Any user's sessions, for tokens with the admin role"},
        {"name": "service", "description": "Health, readiness and metrics"},
    ],
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "The access token (the refresh token for `/api/v1/auth/refresh`).",
            },
            "dpop": {
                "type": "http",
                "scheme": "DPoP",
                "description": "A token bound to the client's key (`token_type` `DPoP`, RFC "
                "9449): `Authorization: DPoP <token>`, and a `DPoP` header with a fresh proof "
                "by that key: a compact JWS, `typ` `dpop+jwt`, `alg` `ES256` or `EdDSA`, the "
                "public `jwk`; claims `jti`, `htm`, `htu` (the URL without query), `iat`, "
                "`ath` (base64url SHA-256 of the token). Each proof is accepted once.",
            },
        },
    },
}

#: The /docs page's own files and the Swagger UI release shipped in the package.
STATIC_DOCS = str(Path(__file__).parent.parent / "static" / "docs")

#: Where the /docs page's own files and the Swagger UI release shipped in the
#: package (``static/docs/``: ``init.js``, ``docs.css``, ``swagger-ui/``) are served.
DOCS_ASSETS = "/docs/assets"
_UI = f"{DOCS_ASSETS}/swagger-ui"

#: The /docs page's Content-Security-Policy: its own files only. Swagger UI
#: sets styles through the DOM, which a policy does not restrict, and fetches
#: the document and "Try it out" requests from this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

#: flasgger's config: Swagger UI at ``/docs``, the document at ``/apispec.json``.
SWAGGER_CONFIG: dict[str, Any] = {
    "openapi": OPENAPI_VERSION,
    "headers": [],
    "specs": [
        {
            "endpoint": "apispec",
            "route": "/apispec.json",
            "rule_filter": documented,
            "model_filter": lambda tag: True,
        }
    ],
    # flasgger's own static folder (Swagger UI 3.28.0, in a known XSS range,
    # and jQuery 2.2.4) is replaced by ours: only the UI we ship is served.
    "static_folder": STATIC_DOCS,
    "static_url_path": DOCS_ASSETS,
    "swagger_ui": True,
    "specs_route": "/docs",
    "title": "sessionsvc API",
    "swagger_ui_bundle_js": f"{_UI}/swagger-ui-bundle.js",
    "swagger_ui_standalone_preset_js": f"{_UI}/swagger-ui-standalone-preset.js",
    "swagger_ui_css": f"{_UI}/swagger-ui.css",
    "favicon": f"{_UI}/favicon-32x32.png",
    # Read by the page's templates (templates/flasgger/).
    "docs_init_js": f"{DOCS_ASSETS}/init.js",
    "docs_css": f"{DOCS_ASSETS}/docs.css",
    # The top bar is the only part of flasgger's page that needs jQuery.
    "hide_top_bar": True,
}
