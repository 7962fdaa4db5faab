"""The CLI commands: each module's `run(args, context) -> int` is one subcommand."""
