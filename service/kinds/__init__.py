"""Job kinds: each one an input model, a handler and an output content type, registered by name."""
