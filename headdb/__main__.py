from headdb.cli.app import main

if __name__ == "__main__":  # a guard: the demo starts a second process with "spawn", which imports this module
    main()
