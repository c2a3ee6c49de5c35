from headdb.cli import main

main()
