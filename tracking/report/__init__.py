"""Paper-style reports of a grid or a search: reading the ledger into the statistics' rows, rendering markdown,
HTML and CSV, and the figures. Imports: runs/ and stats/."""
