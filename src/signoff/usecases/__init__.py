"""Use-cases: each loads state, asks the domain, and commits one transaction."""
