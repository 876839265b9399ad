"""A service that receives sessionsvc's webhooks: verify, deduplicate, act.

    pip install flask standardwebhooks
    SESSIONSVC_WEBHOOK_SECRET=whsec_... flask --app examples/webhook_receiver run --port 9000

and give sessionsvc ``SESSIONSVC_WEBHOOK_URLS=http://127.0.0.1:9000/webhooks``
with the same secret. Deliveries are at least once: a retry, or a delivery
taken over from a deliverer that died, comes again with the same
``webhook-id``, so a receiver acts on each id once. This one keeps the ids
it saw in memory; a real one keeps them where its own effects are (a unique
key in its database), for longer than the sender retries (27 hours by
default).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from flask import Flask, Response, request
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

#: How many delivery ids to remember (the oldest are forgotten first).
SEEN_MAX = 10_000


def create_app(secret: str | None = None) -> Flask:
    app = Flask(__name__)
    webhook = Webhook(secret or os.environ["SESSIONSVC_WEBHOOK_SECRET"])
    seen: OrderedDict[str, None] = OrderedDict()
    #: What this receiver acted on, in order (a real one would send a mail).
    app.config["RECEIVED"] = received = []

    @app.post("/webhooks")
    def receive() -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            # Checks the signature, and that the timestamp is within 5 minutes.
            event: dict[str, Any] = webhook.verify(request.get_data(), headers)
        except WebhookVerificationError:
            return Response("bad signature", status=400)
        delivery_id = headers["webhook-id"]
        if delivery_id in seen:
            return Response(status=204)  # a retry of one already handled
        seen[delivery_id] = None
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        received.append(event)
        data = event["data"]
        if event["type"] == "session.created":
            app.logger.warning(
                "new sign-in for %s from %s (%s)", data["user_id"], data["ip"], data["user_agent"]
            )
        elif event["type"] == "session.anomaly":
            app.logger.warning("unusual use of %s's session: %s", data["user_id"], data["detail"])
        return Response(status=204)

    return app
