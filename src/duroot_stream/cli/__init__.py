"""The `duroot-stream` program: the parser, exit codes, one module per group of subcommands."""
