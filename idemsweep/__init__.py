"""The `idem` command line: one entry point over idemcore, the store, the API and workers."""
