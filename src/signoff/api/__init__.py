"""HTTP adapters: the agent API, health, metrics, JWKS, evidence links, Slack endpoint."""
