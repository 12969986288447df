"""``signoff demo`` and what it runs offline: the Slack Web API stand-in (also
``signoff standin``), small loopback servers (the executor), and the sample workflow
file and submission the tests and benches share.

- ``run``: the demo itself (``run_demo``)
- ``slack_standin``: ``SlackStandIn``, an imitation of the Slack Web API methods signoff
  calls, with Slack's rate limits when asked
- ``loopback``: ``LoopbackHTTP`` (a server on a free 127.0.0.1 port) and the demo's executor
- ``samples``: the demo's workflow file, agent and submission
"""
