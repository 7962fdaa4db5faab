"""Read-only knowledge of the Azure Linux agent: its config, log, Lib.Dir state and processes."""
