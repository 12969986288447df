"""Durable side effects: rows written in the use-case's transaction, delivered after commit."""
