from sandbox.amadeus.main import main

main()
