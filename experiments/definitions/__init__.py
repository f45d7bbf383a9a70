"""What an experiment is and where it is kept: definitions as people write them (YAML or TOML),
variants, the metric names, bucketing, and the registry with its audit log. Imported by every
other part of experiments; imports none of them."""
