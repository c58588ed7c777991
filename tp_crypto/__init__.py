"""Identities (Ed25519), Noise handshakes and the symmetric crypto of links and circuits."""
