"""`python -m lhopt_cli` is the `lhopt` command."""
from .cli import main

main()
