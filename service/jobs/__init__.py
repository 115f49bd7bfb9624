"""Jobs: the claim check, its state machine, its audit trail and its dispatch to workers."""
