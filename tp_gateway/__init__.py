"""The local OpenAI-compatible gateway into the token.place overlay."""
