"""Library verbs, one per module: `verb(inputs, *, options) -> Result`. The CLI calls these."""
