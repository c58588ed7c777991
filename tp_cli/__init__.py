"""Command-line plumbing the commands share (tp-relay, tp-node, tp-gateway): arguments and config files,
logging, starting and stopping a role."""
