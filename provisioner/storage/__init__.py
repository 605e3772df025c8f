"""Storage: pure command builders and parsers, and the operations that run them on nodes."""
