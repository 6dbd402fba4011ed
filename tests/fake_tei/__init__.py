"""A stand-in for TEI's `text-embeddings-router` 1.9.3 (stdlib only); see README.md."""
