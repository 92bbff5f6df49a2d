"""`python -m monitoring`: see monitoring/cli.py."""

from monitoring.cli import main

main()
