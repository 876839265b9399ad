"""The OpenAPI document and Swagger UI of a host app that mounts the extension.

Opt-in (``SessionManager(app, docs=True)``). The document is the standalone
service's, built by the same flasgger machinery from the same template and
operation specs, but of the routes sessionsvc mounted in this app only (under
the prefixes they really have; the host's own routes are left out), and the
page is the standalone's ``/docs`` page: the Swagger UI release shipped in the
package, the same templates and Content-Security-Policy.

Nothing of flasgger is installed on the host app: ``Swagger(app)`` would wrap
the app's ``add_url_rule``, set ``app.swag``, read the host's ``SWAGGER``
config and add ``/apidocs/index.html`` and ``/oauth2-redirect.html``. Here
flasgger only builds the document, and the page renders through a Jinja
environment of its own, so the host's templates (its own ``flasgger/``
overrides, say) and ours never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flasgger
from flasgger import Swagger
from flask import Blueprint, Flask, Response, current_app, jsonify, url_for
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from werkzeug.routing import Rule

from .. import payloads
from ..settings import ConfigError
from . import DOCS_CSP, OPENAPI_VERSION, STATIC_DOCS, TEMPLATE, documented, operation_of

#: The blueprint that serves the page, its assets and the document.
NAME = "sessionsvc_docs"
#: Where the page's assets are served, below the page's own path.
ASSETS = "/assets"

_PACKAGE = Path(__file__).parent.parent
#: The page's templates: the package's overrides of flasgger's, then flasgger's own.
_PAGES = Environment(
    loader=ChoiceLoader(
        [
            FileSystemLoader(_PACKAGE / "templates"),
            FileSystemLoader(Path(flasgger.__file__).parent / "ui3" / "templates"),
        ]
    ),
    autoescape=select_autoescape(["html"]),
)


def install(app: Flask, docs_path: str, spec_path: str) -> None:
    """Serve Swagger UI at ``docs_path`` and the document at ``spec_path``.

    Call it after the extension's blueprints are registered: a path the app
    already routes is refused, so the host's own routes keep answering.

    :raises ConfigError: a path is not absolute, the two are the same, or the
        app already has a route there; the message names the argument.
    """
    for name, path in (("docs_path", docs_path), ("spec_path", spec_path)):
        if not path.startswith("/") or path != path.rstrip("/") or "<" in path:
            raise ConfigError(
                f"SessionManager({name}=...) must be an absolute path without a trailing "
                f"slash or variables, got {path!r}"
            )
    if docs_path == spec_path or spec_path.startswith(docs_path + ASSETS + "/"):
        raise ConfigError(
            f"SessionManager(spec_path={spec_path!r}) collides with the docs page "
            f"(docs_path={docs_path!r}) or its assets under {docs_path + ASSETS}/"
        )
    for name, path in (("docs_path", docs_path), ("spec_path", spec_path)):
        taken = _routed(app, path)
        if taken is not None:
            raise ConfigError(
                f"the app already has a route at {path} ({taken}): pass "
                f"SessionManager(docs=True, {name}=...) another path"
            )
    assets = _routed(app, docs_path + ASSETS, under=True)
    if assets is not None:
        raise ConfigError(
            f"the app already has a route under {docs_path + ASSETS}/ ({assets}), where the "
            "docs page's assets go: pass SessionManager(docs=True, docs_path=...) another path"
        )
    app.register_blueprint(_blueprint(app, docs_path, spec_path))


def _routed(app: Flask, path: str, *, under: bool = False) -> str | None:
    """The endpoint of a rule of ``app`` (not of the docs) at ``path`` (with or
    without a trailing slash) or, ``under``, below it; ``None`` if there is none."""
    for rule in app.url_map.iter_rules():
        pattern = rule.rule.rstrip("/")
        ours = rule.endpoint.startswith(NAME + ".")
        if not ours and (pattern == path or (under and pattern.startswith(path + "/"))):
            return str(rule.endpoint)
    return None


def _not_shadowing(path: str, setting: str) -> None:
    """Refuse to answer for a route the host added at the same path after
    ``init_app``: the docs' rule, added first, would hide it for good."""
    taken = _routed(current_app, path)
    if taken is not None:
        raise ConfigError(
            f"the app has a route at {path} ({taken}) added after SessionManager.init_app, "
            f"which the docs hide: pass SessionManager(docs=True, {setting}=...) another path"
        )


def _blueprint(app: Flask, docs_path: str, spec_path: str) -> Blueprint:
    builder = Swagger(
        template=TEMPLATE,
        config={
            "openapi": OPENAPI_VERSION,
            "specs": [{"endpoint": "document", "route": spec_path, "rule_filter": _mounted}],
        },
    )
    # What flasgger's own init_app would set, and all the document needs.
    builder.app = app
    blueprint = Blueprint(
        NAME, __name__, static_folder=STATIC_DOCS, static_url_path=docs_path + ASSETS
    )

    @blueprint.get(spec_path)
    def document() -> Response:
        _not_shadowing(spec_path, "spec_path")
        return jsonify(_trimmed(builder.get_apispecs("document")))

    @blueprint.get(docs_path)
    def page() -> Response:
        _not_shadowing(docs_path, "docs_path")

        def asset(filename: str) -> str:
            return url_for(f"{NAME}.static", filename=filename)

        ui = "swagger-ui/"
        html = _PAGES.get_template("flasgger/index.html").render(
            title=f"{TEMPLATE['info']['title']} API",
            specs=[{"url": url_for(f"{NAME}.document")}],
            swagger_ui_css=asset(ui + "swagger-ui.css"),
            swagger_ui_bundle_js=asset(ui + "swagger-ui-bundle.js"),
            swagger_ui_standalone_preset_js=asset(ui + "swagger-ui-standalone-preset.js"),
            favicon=asset(ui + "favicon-32x32.png"),
            flasgger_config={"docs_css": asset("docs.css"), "docs_init_js": asset("init.js")},
        )
        return payloads.page_headers(Response(html, mimetype="text/html"), DOCS_CSP)

    return blueprint


def _mounted(rule: Rule) -> bool:
    """A rule of sessionsvc's (its view carries one of the document's
    operations), once: not a trailing-slash alias."""
    view = current_app.view_functions.get(rule.endpoint)
    return view is not None and operation_of(view) is not None and documented(rule)


def _trimmed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with only the tags and schemas its operations use.

    The template names every tag and schema of the standalone service; a host
    app without the auth routes, say, has neither ``auth`` nor ``Credentials``.
    """
    operations = [op for item in document["paths"].values() for op in item.values()]
    tags = {tag for op in operations for tag in op.get("tags", ())}
    schemas: dict[str, Any] = document["components"]["schemas"]
    used: set[str] = set()
    pending = _references(document["paths"])
    while pending:
        name = pending.pop()
        if name not in used and name in schemas:
            used.add(name)
            pending |= _references(schemas[name])
    return {
        **document,
        "tags": [tag for tag in document["tags"] if tag["name"] in tags],
        "components": {
            **document["components"],
            "schemas": {name: schema for name, schema in schemas.items() if name in used},
        },
    }


_REF = "#/components/schemas/"


def _references(value: Any) -> set[str]:
    """The names of the schemas ``value`` refers to, at any depth."""
    found: set[str] = set()
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            found.add(ref[len(_REF) :])
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return found
    for item in items:
        found |= _references(item)
    return found
