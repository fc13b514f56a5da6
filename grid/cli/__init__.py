"""What the user types: the `gatelab` command, its subcommands and their output."""
