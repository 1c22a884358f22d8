"""Redis Streams adapters: the message source, the publisher, the preflight and their layout."""
