"""Start-up: preflight, banners, the download phase and the start sequence of the launcher."""
