"""`python -m variational` runs the command line (also under torchrun)."""

from variational.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
