"""Tenants, their API keys and authentication."""
