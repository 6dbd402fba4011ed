"""embed-launcher: supervise Hugging Face TEI as a private embeddings and reranking server."""

__version__ = "0.1.0"
