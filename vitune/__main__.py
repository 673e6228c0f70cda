"""``python -m vitune`` (and ``torchrun -m vitune``) runs the CLI."""

from vitune.cli import main

if __name__ == "__main__":
    main()
