"""The composition root: the `codelift` command line and the assembly of services, the only
code that imports every feature package."""
