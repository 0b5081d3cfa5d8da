from axiom_amadeus_proxy.app import main

if __name__ == "__main__":
    main()
