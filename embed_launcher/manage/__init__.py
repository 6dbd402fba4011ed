"""`embed_manage`: inspect and manage a running (or stopped) server from its data directory."""
