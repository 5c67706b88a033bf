"""`python -m scanctl` runs the CLI."""

from scanctl.cli import main

main()
