"""The server side of webhooks: endpoints, events, deliveries, the deliverer and the SSRF guard."""
