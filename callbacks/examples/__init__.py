"""Runnable examples of the receiver library."""
