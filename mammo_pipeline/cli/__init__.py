"""The ``mammo`` command line (Typer). Each lifecycle stage has its own module."""
