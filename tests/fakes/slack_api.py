"""The Slack Web API fake used by tests (it ships in the package for `signoff demo`)."""

from signoff.standin import *  # noqa: F401,F403
from signoff.standin import BOT_ID, BOT_USER_ID, TEAM_ID, Call, FakeSlack, SlackStandIn, dm_channel  # noqa: F401
