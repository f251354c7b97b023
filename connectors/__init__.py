"""Sources and sinks: the file and Kafka sources, the Parquet and dead-letter sinks, replay."""
