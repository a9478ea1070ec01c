from mipkit.cli.app import main

main()
