"""ctloop's common library: settings, schema, events, topics, Kafka factory, serializer,
registry client and the embedded broker. Every service uses these; none re-implements them."""
