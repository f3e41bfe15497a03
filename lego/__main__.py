"""``python -m lego``: the same CLI as the ``lego`` command (for environments without its script)."""

from lego.cli import main

if __name__ == "__main__":
    main()
