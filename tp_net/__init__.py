"""Frames, links, circuits and transports of the token.place overlay."""
