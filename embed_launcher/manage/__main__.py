"""`python -m embed_launcher.manage` is `embed_manage`."""

from embed_launcher.manage.command import main

main()
