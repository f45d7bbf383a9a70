"""Analysis of experiments: metric SQL, rollups, statistics, analyses per arm and language,
rollout gates and their history. Imported by the CLI, the dashboard, feedback and simulations."""
