"""Webhook signing, verification and delivery; signing and verification import nothing from service/."""
