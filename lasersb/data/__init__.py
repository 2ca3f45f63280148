"""lasersb.data."""
