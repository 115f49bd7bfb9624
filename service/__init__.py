"""Claimcheck: a claim-check backend for long-running jobs."""
