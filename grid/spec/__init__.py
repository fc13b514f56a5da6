"""What a grid file says: YAML to validated specs, expanded to trials with content keys (no Ray, no torch)."""
