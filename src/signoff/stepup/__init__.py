"""Step-up: the OpenID Connect side (discovery, authorization URL, code exchange, ID token)."""
