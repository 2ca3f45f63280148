"""lasersb.brains."""
