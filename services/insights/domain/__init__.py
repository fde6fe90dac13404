"""Pure rules and algorithms of insights: no I/O, no grpc, no SQL (import-linter enforces it)."""
