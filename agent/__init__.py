"""agent: filled in by later issues."""
