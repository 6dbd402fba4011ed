"""The gateway: one HTTP door (OpenAI, Cohere/Jina and TEI dialects) in front of many TEI children."""
