"""The trio edge of the overlay: transports, links and their pumps, the client (ClientLink) and
the hop (HopRuntime, the services host). Every protocol decision is in tp_net.protocol; these
modules move bytes and carry out the cores' outputs."""
