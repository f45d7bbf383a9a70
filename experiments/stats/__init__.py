"""Statistics on user-level sufficient statistics: lifts, CIs, sequential tests, SRM, CUPED."""
