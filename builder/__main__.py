from builder.cli.commands import main

main()
