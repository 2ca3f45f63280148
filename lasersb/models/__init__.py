"""lasersb.models."""
