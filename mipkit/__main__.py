from mipkit.cli import main

main()
