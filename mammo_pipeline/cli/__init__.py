"""The ``mammo`` command line (Typer). Each lifecycle stage has its own module.

May import every stage, lazily inside the commands so that ``mammo --help`` stays fast;
nothing imports the CLI.
"""
