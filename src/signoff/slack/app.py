"""Build the Bolt app and the Web API client."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from signoff.slack.listeners import register
from signoff.usecases.ports import Context


def web_client(token: str, base_url: str) -> WebClient:
    # Retries are the outbox's job (it honours Retry-After); the client fails fast.
    return WebClient(token=token, base_url=base_url, timeout=10, retry_handlers=[])


def bolt_app(ctx: Context, *, token: str, signing_secret: str, client: WebClient) -> App:
    app = App(token=token, signing_secret=signing_secret, client=client, token_verification_enabled=False,
              process_before_response=False, raise_error_for_unhandled_request=False)
    register(app, ctx)
    return app
