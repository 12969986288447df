"""Evidence: the hash-chained event log checked, checkpointed, exported and linked.

- ``checkpoint.write_checkpoint(store, keys, now)`` — a signed statement of the ledger
  head and every request's chain head (call it periodically);
- ``verify.verify_store(store, keys_or_jwks, progress=None)`` — check every chain;
- ``export.build_bundle(store, keys, request_id, now)`` / ``render_html(bundle)`` /
  ``verify_bundle(bundle, jwks)`` — one request's signed bundle, as JSON or HTML;
- ``links.sign_link`` / ``check_link`` — signed, expiring evidence-page links.
"""
