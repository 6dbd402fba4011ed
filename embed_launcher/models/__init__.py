"""Models: TEI's file set, the cache, and the download that fills it."""
