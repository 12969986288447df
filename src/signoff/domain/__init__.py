"""Pure domain: no I/O, no clock reads. Functions of (state, config, now)."""
