"""``python -m edge_ad.cli``: the same command as the ``edge-ad`` entry point."""

from edge_ad.cli.main import main

main()
