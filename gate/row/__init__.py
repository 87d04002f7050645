"""A row of lanes and the officers' station: the bus between them (NATS + JetStream),
signed station commands and the lane's checks before it acts (issue 14, in progress)."""
