"""retrieval: filled in by later issues."""
