"""Deterministic simulation of the real node code on an in-memory network under virtual time."""
