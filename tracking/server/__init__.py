"""The home's MLflow server: starting, reusing, reviving and stopping it (process), its basic-auth app beyond
loopback (auth), and the driver's watcher that brings it back (watch). Imports: the home's layout only."""
