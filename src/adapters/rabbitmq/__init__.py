"""RabbitMQ adapters: the message source, the publisher, the topology they share."""
