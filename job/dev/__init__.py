"""Development tools, never shipped to a cluster (``make package`` leaves this folder out):
the test broker, Kafka helpers, the event generator, the demo, the jar fetcher and the local
standalone cluster."""
