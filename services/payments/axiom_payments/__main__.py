from axiom_payments.app import main

if __name__ == "__main__":
    main()
