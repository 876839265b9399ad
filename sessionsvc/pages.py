"""What the HTML pages (the account page, the admin console) share.

Both pages sign in the same way and describe sessions and events in the same
words: ``static/shared`` holds those scripts (``dpop.js``, ``describe.js``)
once, and :data:`shared` serves them below each page's own assets
(``/account/assets/shared/``, ``/admin/assets/shared/``). Each page's
blueprint carries the shared one inside it, so a host app that registers one
page gets everything that page needs, and a page's Content-Security-Policy
(``'self'``) covers its scripts wherever the app mounts them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, make_response, render_template, request

from . import payloads

#: The pages' Content-Security-Policy: their own scripts and stylesheets only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

#: The scripts both pages load; each page's blueprint registers it under its
#: assets path (endpoint ``<page blueprint>.shared.static``).
shared = Blueprint("shared", __name__, static_folder="static/shared", static_url_path="/shared")


def page_blueprint(name: str, import_name: str, *, assets: str, url_path: str) -> Blueprint:
    """A page's blueprint: its own assets (``static/<assets>``) at ``url_path``,
    the shared scripts at ``url_path + "/shared"``, its templates in ``templates``."""
    page = Blueprint(
        name,
        import_name,
        static_folder=f"static/{assets}",
        static_url_path=url_path,
        template_folder="templates",
    )
    page.register_blueprint(shared, url_prefix=url_path)
    return page


def api_url(prefix: str) -> str:
    """Where a page calls the API mounted at ``prefix``: below the script root
    too, when the app is served below a path of its own (``SCRIPT_NAME``)."""
    return request.script_root + prefix


def render_page(template: str, **context: Any) -> Response:
    """A page: its security headers, and never cached (it names the API it calls)."""
    response = payloads.page_headers(make_response(render_template(template, **context)), CSP)
    response.headers["Cache-Control"] = "no-store"
    return response
