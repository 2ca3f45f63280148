"""lasersb.alignment."""
