"""lasersb.metrics."""
