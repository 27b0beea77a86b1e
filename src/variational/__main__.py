"""`python -m variational` runs the command line (also under torchrun)."""

from variational.cli import run

if __name__ == "__main__":
    run()
