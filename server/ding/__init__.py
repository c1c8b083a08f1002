"""DING messages (G1-G3): plans, quota, rate limits, the escalation runtime and its relay.

The request handlers are in ``server.services.ding``; every decision about who may DING
whom is in ``server.policy``.
"""
