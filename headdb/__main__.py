from headdb.cli.app import main

main()
