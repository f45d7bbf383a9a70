"""Product metrics for everyone over time (not one experiment) and serving health per arm: the
dashboard's overview and serving pages."""
