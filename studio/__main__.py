"""`python -m studio [run TASK ...]`: the same command as `clip-studio`."""

from studio.cli import main

main(prog="python -m studio")
