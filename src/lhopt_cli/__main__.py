"""`python -m lhopt_cli` is the `lhopt` command."""
from lhopt_cli.commands.cli import main

main()
