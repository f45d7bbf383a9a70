"""The local inference engine: a small fill-in-the-middle model of the project's own, on the CPU."""
