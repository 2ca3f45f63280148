"""lasersb.augment."""
