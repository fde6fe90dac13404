"""One module per RPC family; each declares the small repository Protocol it needs."""
