"""Build the Bolt app and the Web API client."""

from __future__ import annotations

from slack_bolt import App
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

from signoff.slack.client import KeepAliveWebClient
from signoff.slack.listeners import register
from signoff.usecases.ports import Context


def web_client(token: str, base_url: str) -> WebClient:
    # Retries are the outbox's job (it honours Retry-After); the client fails fast. Calls
    # share a pool of keep-alive connections instead of one new connection each.
    return KeepAliveWebClient(token=token, base_url=base_url, timeout=10, retry_handlers=[])


def bolt_app(ctx: Context, *, token: str, signing_secret: str, client: WebClient) -> App:
    def authorize(enterprise_id, team_id, user_id) -> AuthorizeResult:
        # One workspace, one bot token: no auth.test. Bolt's default would call it on the
        # first request, so a click arriving while Slack's Web API is slow or down would be
        # refused (and lost) instead of acknowledged and recorded.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=token)

    # process_before_response: listeners ack in the request's thread and hand their work to
    # lazy listeners (see listeners.register), so an ack never waits for a busy worker.
    app = App(
        signing_secret=signing_secret,
        client=client,
        authorize=authorize,
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )
    register(app, ctx)
    return app
