"""Thin command-line entry points behind the `refvos` console script (one module per subcommand)."""
