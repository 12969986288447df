"""Step-up sign-in: the OpenID Connect protocol side (``oidc``)."""
