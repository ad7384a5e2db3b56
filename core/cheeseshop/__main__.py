"""``python -m cheeseshop``."""

from cheeseshop.cli import main

main()
