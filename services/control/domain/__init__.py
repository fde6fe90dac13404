"""The control plane's rules: pure, no transport, no SQL (import-linter guards the package)."""
