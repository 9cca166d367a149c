from evalkit.cli.entry import console_main

if __name__ == "__main__":  # a metric process (spawn) imports the main module again: it must not run the CLI
    console_main()
