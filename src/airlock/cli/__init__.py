"""The command line: parse flags -> options -> core call -> render (text, or JSON with --json)."""
