"""Assignment for the gateway: the running experiments as a snapshot, which arm serves a request,
and exposures recorded once. The only part of experiments that serving/ imports."""
