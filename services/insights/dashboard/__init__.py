"""The team lead's dashboard: one server-rendered page on the insights HTTP side port."""
