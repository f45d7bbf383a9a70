"""The commands of the `codelift` CLI, one module per group; each imports the features it
drives inside its commands, so `--help` stays fast."""
