"""The roles of token.place machines: relay, GPU node, directory authority."""
