"""Rivet's storage: one store per data domain (rules D1-D3), each behind a small interface.

``interfaces.py`` documents the contracts; ``memory/`` is the reference implementation used
by unit tests; ``sqlite/`` is the embedded default. Stores keep what the router classified
and decide nothing about who may see it (house habit 3).
"""
