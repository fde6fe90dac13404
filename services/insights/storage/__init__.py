"""The SQL of the insights service: rollup fold, aggregate reads, persisted insights, cache rows."""
