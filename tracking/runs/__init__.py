"""Runs in MLflow: a trial's tracker and its outbox and writer, the journal catch-up, the ledger that finds a
trial's run by its key, metric histories, and the UI's page addresses. Imports: server/ and the home's layout."""
