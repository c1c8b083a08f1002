"""The Rivet server: gateway, router, policy, services, outbox, bus, hub."""
