"""Default bootstrap relays and authority keys, and relay deployment files."""
