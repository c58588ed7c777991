"""The overlay protocol, sans-IO: frames and their codec, links, circuits (client and hop),
streams, descriptors, the directory and path selection. Nothing here imports trio or awaits: bytes
and events in, bytes and events out (tp_net.trio moves them)."""
