from axiom_verifier.app import main

if __name__ == "__main__":
    main()
