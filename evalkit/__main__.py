import sys

from evalkit.cli import main

if __name__ == "__main__":  # a metric process (spawn) imports the main module again: it must not run the CLI
    sys.exit(main())
